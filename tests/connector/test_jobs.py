"""The job list and its triggers: built from [schedule] in the practice's zone, DST-proof; one job
run is one job_run row and one audit event, whatever the stage does."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from ccm_connector import audit, jobs
from ccm_connector.config import Config, load_config
from ccm_connector.instance import with_values
from ccm_connector.store import open_store

NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def fires(trigger, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Fire times from `start` to `end`, asked as the scheduler asks (previous fire, then now)."""
    out: list[dt.datetime] = []
    now, previous = start, None
    while True:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt >= end:
            return out
        out.append(nxt)
        previous, now = nxt, nxt + dt.timedelta(seconds=1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# --- DST ----------------------------------------------------------------------------------------


def test_a_time_missing_on_the_spring_forward_day_fires_once_an_hour_later() -> None:
    trigger = jobs.LocalTimeTrigger(2, 30, NY)
    got = fires(
        trigger, dt.datetime(2026, 3, 6, 12, tzinfo=NY), dt.datetime(2026, 3, 10, 12, tzinfo=NY)
    )
    assert [f.astimezone(UTC) for f in got] == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 30),  # 02:30 does not exist: 03:30 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
        utc(2026, 3, 10, 6, 30),
    ]


def test_a_time_repeated_on_the_fall_back_day_fires_once() -> None:
    trigger = jobs.LocalTimeTrigger(1, 30, NY)
    got = fires(
        trigger, dt.datetime(2026, 10, 30, 12, tzinfo=NY), dt.datetime(2026, 11, 3, 12, tzinfo=NY)
    )
    assert [f.astimezone(UTC) for f in got] == [
        utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 5, 30),  # the first 01:30 (EDT); not again at 01:30 EST
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
        utc(2026, 11, 3, 6, 30),
    ]


def test_no_day_is_skipped_after_a_run_on_the_spring_forward_day() -> None:
    # APScheduler 3.11.3's CronTrigger(hour=0, minute=30) answers 2026-03-10 here, skipping the 9th.
    trigger = jobs.LocalTimeTrigger(0, 30, NY)
    ran = dt.datetime(2026, 3, 8, 0, 30, tzinfo=NY)
    assert trigger.get_next_fire_time(ran, ran + dt.timedelta(seconds=1)).astimezone(UTC) == utc(
        2026, 3, 9, 4, 30
    )


@pytest.mark.parametrize(
    "zone",
    [
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "Pacific/Honolulu",
        "Australia/Lord_Howe",
    ],
)
def test_every_time_of_day_fires_exactly_once_per_local_day_all_year(zone: str) -> None:
    tz = ZoneInfo(zone)
    for hour in range(24):
        for minute in (0, 30):
            got = fires(
                jobs.LocalTimeTrigger(hour, minute, tz),
                dt.datetime(2026, 1, 1, tzinfo=tz),
                dt.datetime(2027, 1, 1, tzinfo=tz),
            )
            days = [f.astimezone(tz).date() for f in got]
            assert days == [dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(365)], (
                zone,
                hour,
                minute,
            )
            for f in got:
                local = f.astimezone(tz)
                if (local.hour, local.minute) != (hour, minute):
                    # Only a wall time that does not exist that day may move, and only forward by the gap.
                    wall = dt.datetime.combine(local.date(), dt.time(hour, minute), tzinfo=tz)
                    assert wall.astimezone(UTC).astimezone(tz).time() != wall.time(), (zone, local)
                    assert (
                        dt.timedelta(0)
                        < local.replace(tzinfo=None) - wall.replace(tzinfo=None)
                        <= dt.timedelta(hours=1)
                    )


def test_month_close_fires_on_its_day_every_month_across_the_year_end() -> None:
    trigger = jobs.LocalTimeTrigger(7, 0, NY, day=5)
    got = fires(trigger, dt.datetime(2026, 10, 6, tzinfo=NY), dt.datetime(2027, 3, 6, tzinfo=NY))
    assert [f.astimezone(NY).replace(tzinfo=None) for f in got] == [
        dt.datetime(2026, 11, 5, 7),
        dt.datetime(2026, 12, 5, 7),
        dt.datetime(2027, 1, 5, 7),
        dt.datetime(2027, 2, 5, 7),
        dt.datetime(2027, 3, 5, 7),
    ]


def test_a_previous_fire_time_lets_the_scheduler_see_missed_runs() -> None:
    trigger = jobs.LocalTimeTrigger(18, 0, NY)
    previous = dt.datetime(2026, 6, 1, 18, tzinfo=NY)
    later = dt.datetime(2026, 6, 4, 9, tzinfo=NY)
    # After a fire, the next one after it, even though it is already past (to be coalesced).
    assert trigger.get_next_fire_time(previous, later) == dt.datetime(2026, 6, 2, 18, tzinfo=NY)
    assert trigger.get_next_fire_time(None, later) == dt.datetime(2026, 6, 4, 18, tzinfo=NY)


def test_polls_are_evenly_spaced_in_real_time_across_both_changes() -> None:
    trigger = IntervalTrigger(
        minutes=30, timezone=NY, start_date=dt.datetime(2026, 3, 7, 12, tzinfo=NY)
    )
    for start in (dt.datetime(2026, 3, 7, 12, tzinfo=NY), dt.datetime(2026, 10, 31, 12, tzinfo=NY)):
        got = fires(trigger, start, start + dt.timedelta(days=2))
        gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in zip(got, got[1:], strict=False)}
        assert gaps == {dt.timedelta(minutes=30)}


# --- the job list from the configuration ---------------------------------------------------------


def configured(instance: Path, changes: dict[tuple[str, str], str] | None = None) -> Config:
    path = instance / "connector.toml"
    if changes:
        path.write_text(with_values(path.read_text(), changes))
    return load_config(path)


def test_the_job_list_is_built_from_the_schedule_in_the_practice_zone(local_instance: Path) -> None:
    cfg = configured(
        local_instance,
        {
            ("practice", "time_zone"): '"America/New_York"',
            ("schedule", "inbox_every_minutes"): "7",
            ("schedule", "queue_export_at"): '"02:30"',
            ("schedule", "close_month_day"): "3",
            ("schedule", "close_month_at"): '"01:30"',
            ("schedule", "misfire_grace_minutes"): "45",
        },
    )
    by_id = jobs.jobs_by_id(cfg)
    assert list(by_id) == [
        "inbox",
        "returns_pull",
        "reconcile",
        "dispatch",
        "close_month",
        "queue_export",
        "key_expiry",
        "retention",
    ]
    assert set(by_id) == set(jobs.STAGES)
    inbox = by_id["inbox"]
    assert inbox.poll and inbox.misfire_grace_seconds == 7 * 60
    assert inbox.trigger.interval == dt.timedelta(minutes=7)
    export = by_id["queue_export"]
    assert not export.poll and export.misfire_grace_seconds == 45 * 60
    # 02:30 on the spring-forward day in New York: once, at 03:30 EDT.
    start = dt.datetime(2026, 3, 7, 12, tzinfo=NY)
    assert fires(export.trigger, start, start + dt.timedelta(days=2))[0].astimezone(UTC) == utc(
        2026, 3, 8, 7, 30
    )
    close = by_id["close_month"].trigger
    assert close.get_next_fire_time(None, dt.datetime(2026, 10, 4, tzinfo=NY)) == dt.datetime(
        2026, 11, 3, 1, 30, tzinfo=NY
    )


def test_months_to_reconcile_include_last_month_until_it_closes(local_instance: Path) -> None:
    cfg = configured(local_instance, {("schedule", "close_month_day"): "5"})  # America/Chicago
    assert jobs.months_to_reconcile(cfg, utc(2027, 1, 5, 12)) == ["2026-12", "2027-01"]
    assert jobs.months_to_reconcile(cfg, utc(2027, 1, 6, 12)) == ["2027-01"]
    # 03:00 UTC on the 1st is still the 30th in Chicago: November only.
    assert jobs.months_to_reconcile(cfg, utc(2026, 12, 1, 3)) == ["2026-11"]
    assert jobs.previous_month(dt.date(2027, 1, 5)) == "2026-12"


# --- running a job -------------------------------------------------------------------------------


@pytest.fixture
def cfg(local_instance: Path) -> Config:
    return configured(local_instance)


@pytest.fixture
def stage_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in stage module the inbox job is pointed at."""
    module = types.ModuleType("ccm_test_stage")
    monkeypatch.setitem(sys.modules, "ccm_test_stage", module)
    monkeypatch.setitem(jobs.STAGES, "inbox", ("ccm_test_stage", "pickup"))
    return module


def rows(cfg: Config) -> list[sqlite3.Row]:
    return open_store(cfg.store.path).execute("SELECT * FROM job_run ORDER BY id").fetchall()


def audit_events(cfg: Config, kind: str) -> list[sqlite3.Row]:
    return (
        open_store(cfg.store.path)
        .execute("SELECT * FROM audit_event WHERE kind = ? ORDER BY seq", (kind,))
        .fetchall()
    )


def chain_ok(cfg: Config) -> bool:
    return audit.verify(open_store(cfg.store.path), audit.read_key(cfg.audit.key_file)).ok


@dataclass
class Result:
    accepted: list
    name: str
    skipped: int


def test_a_run_records_counts_only_and_is_audited(
    cfg: Config, stage_module: types.ModuleType
) -> None:
    stage_module.pickup = lambda c: Result(
        accepted=["MRN-1", "MRN-2"], name="SMITH^JOHN", skipped=3
    )
    assert jobs.run_job(cfg, "inbox", runner="service") == "ok"
    (row,) = rows(cfg)
    assert row["job"] == "inbox" and row["outcome"] == "ok" and row["finished_at"]
    detail = json.loads(row["detail"])
    assert detail == {"runner": "service", "counts": {"accepted": 2, "skipped": 3}}
    assert "SMITH" not in row["detail"] and "MRN-1" not in row["detail"]
    (event,) = audit_events(cfg, "job.finished")
    assert event["subject"] == "inbox"
    assert json.loads(event["detail"]) == {
        "counts": {"accepted": 2, "skipped": 3},
        "outcome": "ok",
        "run": row["id"],
    }
    assert chain_ok(cfg)


def test_a_failing_stage_is_recorded_without_its_message(
    cfg: Config, stage_module: types.ModuleType
) -> None:
    def pickup(c: Config) -> None:
        raise ValueError("bad birth date 1937-04-12 for QUIXOTEZ")

    stage_module.pickup = pickup
    assert jobs.run_job(cfg, "inbox") == "failed"
    (row,) = rows(cfg)
    assert row["outcome"] == "failed" and json.loads(row["detail"])["reason"] == "ValueError"
    assert "QUIXOTEZ" not in row["detail"]
    assert json.loads(audit_events(cfg, "job.finished")[0]["detail"])["outcome"] == "failed"


def test_a_stage_not_built_yet_is_recorded_as_such(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(jobs.STAGES, "inbox", ("ccm_connector.no_such_stage", "pickup_inbox"))
    monkeypatch.setitem(jobs.STAGES, "dispatch", ("ccm_connector.audit", "no_such_function"))
    assert jobs.run_job(cfg, "inbox") == "not_built"
    assert jobs.run_job(cfg, "dispatch") == "not_built"
    first, second = rows(cfg)
    assert first["outcome"] == second["outcome"] == "not_built"
    assert "ccm_connector.no_such_stage is not built" in json.loads(first["detail"])["reason"]
    assert (
        "ccm_connector.audit.no_such_function is not built"
        in json.loads(second["detail"])["reason"]
    )


def test_every_stage_entry_point_exists() -> None:
    for job_id in jobs.STAGES:
        assert callable(jobs.stage(job_id)), job_id


def test_an_import_error_inside_a_stage_is_a_failure_not_a_missing_stage(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "ccm_broken_stage.py").write_text("import ccm_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(jobs.STAGES, "inbox", ("ccm_broken_stage", "pickup"))
    assert jobs.run_job(cfg, "inbox") == "failed"


def test_reconcile_and_close_month_get_their_months(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    module = types.ModuleType("ccm_test_months")
    module.reconcile = lambda c, month: calls.append(("reconcile", month)) or [1, 2, 3]
    module.close = lambda c, month: calls.append(("close", month)) or {"released": 2}
    monkeypatch.setitem(sys.modules, "ccm_test_months", module)
    monkeypatch.setitem(jobs.STAGES, "reconcile", ("ccm_test_months", "reconcile"))
    monkeypatch.setitem(jobs.STAGES, "close_month", ("ccm_test_months", "close"))
    now = lambda: utc(2027, 1, 5, 15)  # noqa: E731
    assert jobs.run_job(cfg, "reconcile", now=now) == "ok"
    assert jobs.run_job(cfg, "close_month", now=now) == "ok"
    assert calls == [("reconcile", "2026-12"), ("reconcile", "2027-01"), ("close", "2026-12")]
    reconcile_row, close_row = rows(cfg)
    assert json.loads(reconcile_row["detail"])["counts"] == {"2026-12": 3, "2027-01": 3}
    assert json.loads(close_row["detail"])["counts"] == {"2026-12": {"released": 2}}


def test_key_expiry_keeps_the_problems_for_status(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ccm_connector.doctor import Item

    module = types.ModuleType("ccm_test_keys")
    module.check = lambda c: [
        Item("ok", "gpg binary"),
        Item("warn", "partner key ABC", "expires in 9 days (2026-12-01); renew and re-pin"),
    ]
    monkeypatch.setitem(sys.modules, "ccm_test_keys", module)
    monkeypatch.setitem(jobs.STAGES, "key_expiry", ("ccm_test_keys", "check"))
    assert jobs.run_job(cfg, "key_expiry") == "ok"
    counts = json.loads(rows(cfg)[0]["detail"])["counts"]
    assert counts["ok"] == 1 and counts["warn"] == 1 and counts["fail"] == 0
    assert counts["problems"] == [
        {
            "what": "partner key ABC",
            "status": "warn",
            "detail": "expires in 9 days (2026-12-01); renew and re-pin",
        }
    ]


# --- what runs at start --------------------------------------------------------------------------


def insert_run(
    cfg: Config, job: str, started: dt.datetime, outcome: str | None, detail: dict | None = None
) -> int:
    conn = open_store(cfg.store.path)
    cur = conn.execute(
        "INSERT INTO job_run (job, started_at, finished_at, outcome, detail) VALUES (?, ?, ?, ?, ?)",
        (
            job,
            started.isoformat(),
            None if outcome is None else started.isoformat(),
            outcome,
            json.dumps({"runner": "service"} if detail is None else detail),
        ),
    )
    return int(cur.lastrowid)


def dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return int(child.stdout)


def test_open_runs_of_dead_processes_are_marked_interrupted_and_audited(cfg: Config) -> None:
    here = socket.gethostname()
    service_id = insert_run(cfg, "queue_export", utc(2026, 6, 1, 23), None)
    dead_cli_id = insert_run(
        cfg,
        "returns_pull",
        utc(2026, 6, 1, 23),
        None,
        {"runner": "cli", "host": here, "pid": dead_pid()},
    )
    live_cli_id = insert_run(
        cfg,
        "reconcile",
        utc(2026, 6, 1, 23),
        None,
        {"runner": "cli", "host": here, "pid": os.getpid()},
    )
    other_host_id = insert_run(
        cfg,
        "dispatch",
        utc(2026, 6, 1, 23),
        None,
        {"runner": "cli", "host": here + "-other", "pid": 1},
    )
    done_id = insert_run(cfg, "inbox", utc(2026, 6, 1, 23), "ok")
    conn = open_store(cfg.store.path)
    closed = jobs.mark_interrupted(conn, audit.read_key(cfg.audit.key_file), utc(2026, 6, 2, 8))
    assert closed == [(service_id, "queue_export"), (dead_cli_id, "returns_pull")]
    outcomes = {r["id"]: (r["outcome"], r["finished_at"]) for r in rows(cfg)}
    assert outcomes[service_id][0] == outcomes[dead_cli_id][0] == "interrupted"
    assert outcomes[service_id][1] is not None
    assert outcomes[live_cli_id] == (None, None) and outcomes[other_host_id] == (
        None,
        None,
    )  # still running elsewhere
    assert outcomes[done_id][0] == "ok"
    assert [e["subject"] for e in audit_events(cfg, "job.interrupted")] == [
        "queue_export",
        "returns_pull",
    ]
    assert chain_ok(cfg)


def test_what_runs_at_start(cfg: Config) -> None:
    # Chicago; reconcile at 06:00, queue export at 18:00, retention 03:30, key check 05:00, close on the 5th 07:00.
    now = dt.datetime(2026, 6, 10, 12, tzinfo=ZoneInfo("America/Chicago"))
    conn = open_store(cfg.store.path)
    assert jobs.due_at_start(cfg, conn, now) == {
        "inbox": "poll",
        "returns_pull": "poll",
        "dispatch": "poll",
    }
    insert_run(
        cfg,
        "retention",
        dt.datetime(2026, 6, 8, 3, 30, 1, tzinfo=ZoneInfo("America/Chicago")),
        "ok",
    )  # missed the 9th and 10th
    insert_run(
        cfg,
        "reconcile",
        dt.datetime(2026, 6, 10, 6, 0, 0, 5, tzinfo=ZoneInfo("America/Chicago")),
        "ok",
    )  # today's ran
    insert_run(
        cfg, "queue_export", dt.datetime(2026, 6, 10, 9, tzinfo=ZoneInfo("America/Chicago")), None
    )
    jobs.mark_interrupted(conn, audit.read_key(cfg.audit.key_file), now)
    assert jobs.due_at_start(cfg, conn, now) == {
        "inbox": "poll",
        "returns_pull": "poll",
        "dispatch": "poll",
        "retention": "missed",
        "queue_export": "resume",
        "key_expiry": "missed",  # never ran; its 05:00 passed since the first job ever ran (the 8th)
        # reconcile ran today after 06:00; close_month's 5th was before anything ran
    }
    assert set(
        jobs.due_at_start(
            configured(Path(cfg.source).parent, {("schedule", "run_at_start"): "true"}), conn, now
        ).values()
    ) == {"run_at_start"}
