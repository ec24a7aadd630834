-- Exchange with the offshore team: work queues sent, returns received, and what the returns hold
-- (ready for reconciliation; nothing here is reconciled). Idempotency keys: the sealed file's
-- content hash (both ways) and the return id; entry ids are checked by reconciliation.

CREATE TABLE queue_batch (
    id             TEXT PRIMARY KEY,          -- '<practice>-<sequence, 6 digits>'
    sequence       INTEGER NOT NULL UNIQUE,
    period         TEXT NOT NULL,             -- YYYY-MM in the practice's time zone
    created_at     TEXT NOT NULL,             -- UTC ISO-8601
    file_name      TEXT NOT NULL UNIQUE,      -- wq_<practice>_<sequence>.pgp
    content_hash   TEXT NOT NULL UNIQUE,      -- sha256 of the sealed file (what crosses the boundary)
    document_hash  TEXT NOT NULL,             -- sha256 of the XML before sealing
    sealed         BLOB,                      -- the sealed file: re-published byte for byte after a crash
    recipients     TEXT NOT NULL,             -- JSON array of recipient fingerprints
    signer         TEXT NOT NULL,             -- our signing fingerprint
    patients       INTEGER NOT NULL,
    touchpoints    INTEGER NOT NULL,
    identifiers    INTEGER NOT NULL,          -- 1 when MRN/name/birth date were included
    status         TEXT NOT NULL CHECK (status IN ('sealed', 'sent')),
    sent_at        TEXT
);

-- What a batch carried; an item is sent once (a corrected touchpoint or plan has a new content hash).
CREATE TABLE queue_item (
    batch_id   TEXT NOT NULL REFERENCES queue_batch (id),
    kind       TEXT NOT NULL CHECK (kind IN ('touchpoint', 'care_plan', 'enrollment', 'plan_review')),
    item_key      TEXT NOT NULL,              -- touchpoint id, care-plan document id, mrn#program#consent id
    content_hash  TEXT NOT NULL,              -- sha256 of what was sent for it
    mrn           TEXT NOT NULL,
    PRIMARY KEY (kind, item_key, content_hash)
);
CREATE INDEX queue_item_batch ON queue_item (batch_id);

-- Every return file looked at (accepted or refused), once per content hash.
CREATE TABLE return_file (
    id            INTEGER PRIMARY KEY,
    content_hash  TEXT NOT NULL UNIQUE,       -- sha256 of the file as received (ciphertext)
    name          TEXT NOT NULL,              -- printable form of the drop file name
    size          INTEGER NOT NULL,
    received_at   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('accepted', 'refused')),
    reason        TEXT,                       -- why refused, without document content
    signer        TEXT,                       -- signing fingerprint, when known
    return_id     TEXT UNIQUE,                -- set for accepted returns only
    document_hash TEXT,                       -- sha256 of the decrypted XML (accepted only)
    prepared_by   TEXT,                       -- JSON array of offshore user ids
    answers       TEXT,                       -- JSON array of queue batch ids
    created       TEXT                        -- the return's own creation time (UTC)
);

-- Activity-log entries as the offshore team wrote them; reconciliation compares them with touchpoints.
-- An entry id seen again in a later return is stored as sent; reconciliation flags it
-- (DUPLICATE_ENTRY in spec/findings.md) instead of the whole return being refused.
CREATE TABLE return_entry (
    entry_id        TEXT NOT NULL,            -- the team's entry id
    return_file_id  INTEGER NOT NULL REFERENCES return_file (id),
    pseudonym       TEXT NOT NULL,
    mrn             TEXT,                     -- resolved from the pseudonym; NULL if unknown
    touchpoint_ids  TEXT NOT NULL,            -- JSON array of practice touchpoint ids
    performer       TEXT NOT NULL,            -- staff id the entry names
    date            TEXT NOT NULL,
    minutes         INTEGER NOT NULL CHECK (minutes > 0),
    activity        TEXT NOT NULL,
    description     TEXT NOT NULL,
    PRIMARY KEY (return_file_id, entry_id)
);
CREATE INDEX return_entry_id ON return_entry (entry_id);
CREATE INDEX return_entry_mrn ON return_entry (mrn, date);

CREATE TABLE care_plan_draft (
    id              INTEGER PRIMARY KEY,
    return_file_id  INTEGER NOT NULL REFERENCES return_file (id),
    pseudonym       TEXT NOT NULL,
    mrn             TEXT,
    revises         TEXT,                     -- care_plan.document_id it revises; NULL for a first plan
    changes         TEXT NOT NULL             -- JSON array of {element, action, text}
);

CREATE TABLE proposed_code (
    return_file_id  INTEGER NOT NULL REFERENCES return_file (id),
    pseudonym       TEXT NOT NULL,
    mrn             TEXT,
    month           TEXT NOT NULL,            -- YYYY-MM
    code            TEXT NOT NULL,
    units           INTEGER NOT NULL CHECK (units > 0),
    PRIMARY KEY (return_file_id, pseudonym, month, code)
);

-- Files refused at the exchange boundary, with the reason; ciphertext kept, plaintext never.
CREATE TABLE exchange_quarantine (
    id            INTEGER PRIMARY KEY,
    at            TEXT NOT NULL,
    direction     TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    name          TEXT NOT NULL,              -- printable form of the file name
    content_hash  TEXT,                       -- NULL when the file was never read (bad name)
    reason        TEXT NOT NULL,              -- why, without document content (status and reports show it)
    detail        TEXT,                       -- the full parser/schema messages (may quote the document)
    content       BLOB                        -- the file as received (still encrypted)
);
CREATE INDEX exchange_quarantine_name ON exchange_quarantine (name);
