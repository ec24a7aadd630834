-- Foundation: job runs (for status and the scheduler) and the hash-chained audit log.

CREATE TABLE job_run (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,              -- e.g. 'intake', 'queue_export'
    started_at  TEXT NOT NULL,              -- UTC ISO-8601
    finished_at TEXT,
    outcome     TEXT,                       -- 'ok' | 'failed' | NULL while running
    detail      TEXT                        -- counts and reasons only, never PHI
);
CREATE INDEX job_run_job ON job_run (job, started_at);

-- Append-only: each row's mac = HMAC(key, prev_mac || canonical JSON of the row's fields).
CREATE TABLE audit_event (
    seq        INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,               -- UTC ISO-8601
    kind       TEXT NOT NULL,               -- e.g. 'hl7.received', 'file.sent', 'signoff'
    subject    TEXT NOT NULL,               -- ids only: message id, file hash, patient-month key
    detail     TEXT NOT NULL,               -- canonical JSON of ids, counts, reasons
    prev_mac   TEXT NOT NULL,
    mac        TEXT NOT NULL
);
CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END;
