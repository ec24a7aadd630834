-- Reconciliation, review and sign-off, billing release.

-- One row per patient-month the connector has reconciled. The decision is kept with the exact
-- facts it was made from; packet_hash binds a sign-off to the content it approved.
CREATE TABLE patient_month (
    mrn             TEXT NOT NULL,
    month           TEXT NOT NULL,          -- YYYY-MM in the practice's time zone
    state           TEXT NOT NULL,          -- not_billable | awaiting_signoff | signed | rejected | released
    billable        INTEGER NOT NULL,       -- the decision's billable flag
    facts           TEXT NOT NULL,          -- canonical JSON facts given to the rules engine
    decision        TEXT NOT NULL,          -- canonical JSON decision
    reconciliation  TEXT NOT NULL,          -- canonical JSON list of reconciliation findings
    packet          TEXT NOT NULL,          -- canonical JSON review packet (what the physician signs)
    packet_hash     TEXT NOT NULL,          -- sha256 of the review packet
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (mrn, month)
);
CREATE INDEX patient_month_state ON patient_month (month, state);

CREATE TABLE signoff (
    id           INTEGER PRIMARY KEY,
    mrn          TEXT NOT NULL,
    month        TEXT NOT NULL,
    packet_hash  TEXT NOT NULL,             -- the content signed; void when the packet changes
    npi          TEXT NOT NULL,
    outcome      TEXT NOT NULL,             -- approved | rejected
    reason       TEXT,
    via          TEXT NOT NULL,             -- hl7:<message id> | cli
    at           TEXT NOT NULL,
    voided_at    TEXT,
    void_reason  TEXT
);
CREATE INDEX signoff_month ON signoff (mrn, month);

CREATE TABLE billing_release (
    id           INTEGER PRIMARY KEY,
    mrn          TEXT NOT NULL,
    month        TEXT NOT NULL,
    packet_hash  TEXT NOT NULL,
    released_at  TEXT NOT NULL,
    status       TEXT NOT NULL,             -- released | voided
    voided_at    TEXT
);
CREATE UNIQUE INDEX billing_release_once ON billing_release (mrn, month) WHERE status = 'released';
CREATE INDEX billing_release_month ON billing_release (mrn, month);

CREATE TABLE billing_line (
    release_id      INTEGER NOT NULL REFERENCES billing_release (id),
    transaction_id  TEXT NOT NULL UNIQUE,   -- FT1-2, stable per patient-month-code (+ reversal suffix)
    code            TEXT NOT NULL,
    units           INTEGER NOT NULL,
    date_of_service TEXT NOT NULL,
    reversal        INTEGER NOT NULL DEFAULT 0
);

-- Everything we send out (review packets, care plans, charges, reversals), recorded before it
-- is sent so that it is neither lost nor repeated; sent only counts on AA / a completed write.
CREATE TABLE outbound (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL,            -- review_packet | care_plan | charges | reversal | csv | package
    subject       TEXT NOT NULL,            -- mrn|month or file name
    control_id    TEXT UNIQUE,              -- MSH-10 for HL7 messages
    destination   TEXT NOT NULL,            -- folder | sftp | mllp | ehr
    payload       BLOB NOT NULL,
    status        TEXT NOT NULL,            -- pending | sent | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    sent_at       TEXT
);
CREATE INDEX outbound_status ON outbound (status, kind);
CREATE INDEX outbound_subject ON outbound (kind, subject);

-- The physician's decision on an offshore care-plan draft, taken with the month's sign-off.
-- Approved: a new current plan (care_plan row) and an MDM^T02 CCM-PLAN to the EHR. Rejected:
-- the reason goes back to the offshore team in the next work queue. Decided once per draft.
CREATE TABLE care_plan_review (
    draft_id         INTEGER PRIMARY KEY REFERENCES care_plan_draft (id),
    mrn              TEXT NOT NULL,
    month            TEXT NOT NULL,
    outcome          TEXT NOT NULL,         -- approved | rejected
    reason           TEXT,
    new_document_id  TEXT,                  -- the care_plan document an approval created
    decided_at       TEXT NOT NULL
);
