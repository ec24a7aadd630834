-- Intake: every inbound HL7 message (raw, durable before its ACK), quarantine, and the
-- canonical records mapped from them. Records keep the message they came from.

CREATE TABLE inbound_message (
    id            INTEGER PRIMARY KEY,
    sender        TEXT NOT NULL,            -- MSH-3^MSH-4 of the sender
    control_id    TEXT NOT NULL,            -- MSH-10
    content_hash  TEXT NOT NULL,            -- sha256 of the normalised message
    received_at   TEXT NOT NULL,            -- UTC ISO-8601
    source        TEXT NOT NULL,            -- 'mllp:<peer>' | 'file:<name>#<index>'
    message_type  TEXT,                     -- MSH-9, e.g. ADT^A01
    raw           BLOB NOT NULL,
    status        TEXT NOT NULL,            -- received | mapped | ignored | rejected | conflict
    reason        TEXT,                     -- why ignored / rejected / conflict (no PHI)
    UNIQUE (sender, control_id, content_hash)
);
CREATE INDEX inbound_message_status ON inbound_message (status);

-- Anything that could not even be read as a message (no MSH, bad framing, bad bytes).
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY,
    at          TEXT NOT NULL,
    source      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    content     BLOB NOT NULL
);

CREATE TABLE patient (
    mrn         TEXT PRIMARY KEY,
    family      TEXT NOT NULL,
    given       TEXT NOT NULL,
    birth_date  TEXT,
    sex         TEXT,
    mbi         TEXT,
    message_id  INTEGER REFERENCES inbound_message (id)
);

CREATE TABLE problem (
    mrn         TEXT NOT NULL,
    code        TEXT NOT NULL,
    system      TEXT NOT NULL,
    status      TEXT NOT NULL,
    message_id  INTEGER REFERENCES inbound_message (id),
    PRIMARY KEY (mrn, code, system)
);

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

CREATE TABLE stay (
    mrn         TEXT NOT NULL,
    admitted    TEXT NOT NULL,
    discharged  TEXT,
    kind        TEXT NOT NULL,
    visit_id    TEXT,
    message_id  INTEGER REFERENCES inbound_message (id),
    PRIMARY KEY (mrn, admitted, kind)
);

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
    message_id      INTEGER REFERENCES inbound_message (id)
);
CREATE INDEX touchpoint_mrn ON touchpoint (mrn, start_utc);

CREATE TABLE care_plan (
    document_id  TEXT PRIMARY KEY,
    mrn          TEXT NOT NULL,
    date         TEXT NOT NULL,
    elements     TEXT NOT NULL,             -- JSON array of element names
    shared_on    TEXT,
    reviewed_on  TEXT,
    message_id   INTEGER REFERENCES inbound_message (id)
);
CREATE INDEX care_plan_mrn ON care_plan (mrn, date);

CREATE TABLE mrn_merge (
    retired_mrn    TEXT PRIMARY KEY,
    surviving_mrn  TEXT NOT NULL,
    message_id     INTEGER REFERENCES inbound_message (id)
);
