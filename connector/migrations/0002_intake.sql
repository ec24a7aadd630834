-- Intake: every inbound HL7 message (raw, durable before its ACK), quarantine, and the
-- canonical records mapped from them. Records keep the message they came from.

-- Dedupe: a resend (same sender, MSH-10 and content) is acknowledged as the first was and not
-- processed again (resends counts them); the same sender and MSH-10 with other content is
-- stored with status 'conflict' and not mapped.
CREATE TABLE inbound_message (
    id            INTEGER PRIMARY KEY,
    sender        TEXT NOT NULL,            -- MSH-3|MSH-4 as written: the namespace of MSH-10
    control_id    TEXT NOT NULL,            -- MSH-10
    content_hash  TEXT NOT NULL,            -- sha256 of the message's segments joined by CR
    received_at   TEXT NOT NULL,            -- UTC ISO-8601
    source        TEXT NOT NULL,            -- 'mllp:<peer>' | 'file:<name>#<index>'
    message_type  TEXT,                     -- MSH-9, e.g. ADT^A01
    raw           BLOB NOT NULL,            -- the MLLP frame as received, or the message's segments from a file
    status        TEXT NOT NULL CHECK (status IN ('mapped', 'ignored', 'rejected', 'conflict')),
    reason        TEXT,                     -- why ignored / rejected / conflict; warnings when mapped (no PHI)
    ack_code      TEXT NOT NULL,            -- AA | AE: what the sender was told
    records       INTEGER NOT NULL DEFAULT 0,  -- records stored from it
    resends       INTEGER NOT NULL DEFAULT 0,  -- identical resends acknowledged without processing
    UNIQUE (sender, control_id, content_hash)
);
-- Only the messages that need a person are indexed by status, so a mapped message's commit
-- touches one page fewer (intake throughput is bound by pages written per commit).
CREATE INDEX inbound_message_attention ON inbound_message (status) WHERE status IN ('rejected', 'conflict');

-- Anything that could not even be read as a message (no MSH, bad framing, bad bytes).
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    control_id  TEXT,                       -- MSH-10 when one could be found (echoed in the AR)
    size        INTEGER NOT NULL,           -- bytes received (content may hold only the first part)
    content     BLOB NOT NULL
);

CREATE TABLE patient (
    mrn         TEXT PRIMARY KEY,
    family      TEXT NOT NULL,
    given       TEXT NOT NULL,
    birth_date  TEXT,
    sex         TEXT,
    mbi         TEXT,
    death_date  TEXT,                       -- PID-29, practice-local date; kept once reported
    message_id  INTEGER REFERENCES inbound_message (id)
) WITHOUT ROWID;

CREATE TABLE problem (
    mrn         TEXT NOT NULL,
    code        TEXT NOT NULL,
    system      TEXT NOT NULL,
    status      TEXT NOT NULL,
    message_id  INTEGER REFERENCES inbound_message (id),
    PRIMARY KEY (mrn, code, system)
) WITHOUT ROWID;

-- One row per code of a Service record; a credit line (FT1-6 CD) deletes the matching rows.
-- (mrn, date, code, practitioner_npi) is unique; the intake checks it with IS, since a
-- missing NPI is NULL and UNIQUE treats NULLs as distinct.
CREATE TABLE service (
    id               INTEGER PRIMARY KEY,
    mrn              TEXT NOT NULL,
    date             TEXT NOT NULL,
    code             TEXT NOT NULL,
    practitioner_npi TEXT,
    transaction_id   TEXT,
    message_id       INTEGER REFERENCES inbound_message (id),
    UNIQUE (mrn, date, code, practitioner_npi)
);
CREATE INDEX service_mrn ON service (mrn, date);

-- Inpatient and SNF stays (ADT A01 opens, A03 closes; matched by visit id when there is one).
CREATE TABLE stay (
    mrn         TEXT NOT NULL,
    admitted    TEXT NOT NULL,
    discharged  TEXT,
    kind        TEXT NOT NULL,
    visit_id    TEXT,
    message_id  INTEGER REFERENCES inbound_message (id),
    PRIMARY KEY (mrn, admitted, kind)
) WITHOUT ROWID;

CREATE TABLE consent (
    id               INTEGER PRIMARY KEY,
    mrn              TEXT NOT NULL,
    program          TEXT NOT NULL,
    date             TEXT NOT NULL,
    practitioner_npi TEXT,
    status           TEXT NOT NULL,
    document_id      TEXT UNIQUE,
    message_id       INTEGER REFERENCES inbound_message (id)
);

CREATE TABLE touchpoint (
    id              TEXT PRIMARY KEY,       -- EHR document id (TXA-12)
    mrn             TEXT NOT NULL,
    staff_id        TEXT NOT NULL,
    start_utc       TEXT NOT NULL,          -- UTC ISO-8601
    start_offset    INTEGER,                -- source UTC offset in minutes, NULL if unstated
    minutes         INTEGER NOT NULL CHECK (minutes > 0),
    activity        TEXT NOT NULL,
    summary         TEXT NOT NULL,
    mdm             TEXT,                   -- low | moderate | high (the practitioner's MDM), or NULL
    message_id      INTEGER REFERENCES inbound_message (id)
) WITHOUT ROWID;
CREATE INDEX touchpoint_mrn ON touchpoint (mrn, start_utc);

CREATE TABLE care_plan (
    document_id  TEXT PRIMARY KEY,
    mrn          TEXT NOT NULL,
    date         TEXT NOT NULL,
    elements     TEXT NOT NULL,             -- JSON array of element names
    shared_on    TEXT,
    reviewed_on  TEXT,
    message_id   INTEGER REFERENCES inbound_message (id)
) WITHOUT ROWID;
CREATE INDEX care_plan_mrn ON care_plan (mrn, date);

-- ADT^A40: records of a retired MRN are moved to the survivor, and records that arrive later
-- for the retired MRN are stored under the survivor. Chains are kept flat (A→B, B→C makes A→C).
CREATE TABLE mrn_merge (
    retired_mrn    TEXT PRIMARY KEY,
    surviving_mrn  TEXT NOT NULL,
    message_id     INTEGER REFERENCES inbound_message (id)
) WITHOUT ROWID;
CREATE INDEX mrn_merge_surviving ON mrn_merge (surviving_mrn);
