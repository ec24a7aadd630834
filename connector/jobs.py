"""The scheduled jobs, as data: id, trigger (from [schedule], in the practice's time zone), function.

Every job is a thin function `job_<name>(cfg, now)` that calls one stage and returns its counts.
`run_job` wraps it: a `job_run` row before (outcome NULL while running), the outcome and counts
after (ok | failed | not_built; 'interrupted' is set by the next `run` for a row a killed
process left open), and an audit event for the finished run. Stages are idempotent and keep
their pending work in the store, so running a job twice, or again after a crash, is safe.

Stage modules are imported when their job runs, so the service starts quickly and a broken
stage fails its job, not the service; a STAGES entry naming nothing is recorded `not_built`.

Daily and monthly times use `LocalTimeTrigger`, not APScheduler's CronTrigger: CronTrigger
3.11.3 fires an ambiguous fall-back time (01:30) twice and, on the spring-forward day, skips
the next day's run of a time before the change (00:30). See tests/connector/test_jobs.py.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import audit, logs
from .config import Config
from .errors import InputError, OperationalError
from .store import open_store, transaction

log = logs.get_logger("jobs")

# Stage entry points: job id -> (module, function), each taking the configuration (and the
# month, for reconcile and close_month). connector/stages.py adapts the stages to this shape.
STAGES: dict[str, tuple[str, str]] = {
    "inbox": ("ccm_connector.stages", "pickup_inbox"),
    "queue_export": ("ccm_connector.stages", "export_queue"),
    "returns_pull": ("ccm_connector.stages", "pull_returns"),
    "reconcile": ("ccm_connector.stages", "reconcile_month"),
    "dispatch": ("ccm_connector.stages", "dispatch_packets"),
    "close_month": ("ccm_connector.stages", "close_month"),
    "key_expiry": ("ccm_connector.doctor", "check_gpg"),
    "retention": ("ccm_connector.retention", "prune"),
}


class StageNotBuilt(Exception):
    """The stage's module or function does not exist (a misconfigured STAGES entry)."""

# --- triggers ------------------------------------------------------------------------------------


class LocalTimeTrigger(BaseTrigger):
    """Fires at a wall-clock time in a zone, every day or on one day of each month.

    DST rules (fixed and tested): a time that does not exist (spring-forward gap) fires once,
    shifted by the gap (02:30 -> 03:30 EDT), as PEP 495 fold=0 reads it; a time that occurs
    twice (fall-back) fires once, at its first occurrence.
    """

    def __init__(self, hour: int, minute: int, zone: ZoneInfo, day: int | None = None) -> None:
        self.hour, self.minute, self.zone, self.day = hour, minute, zone, day

    def _fire_on(self, date: dt.date) -> dt.datetime:
        # fold=0: the first of two occurrences; for a missing time, the offset before the gap.
        local = dt.datetime.combine(date, dt.time(self.hour, self.minute), tzinfo=self.zone)
        return local.astimezone(dt.UTC).astimezone(self.zone)

    def _dates_from(self, date: dt.date) -> Iterable[dt.date]:
        if self.day is None:
            while True:
                yield date
                date += dt.timedelta(days=1)
        year, month = date.year, date.month
        if date.day > self.day:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        while True:
            yield dt.date(year, month, self.day)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime:
        # As CronTrigger: after a previous fire, the next one after it (even if already past, so
        # the scheduler can see and coalesce missed runs); else the first one at or after now.
        start = (
            min(now, previous_fire_time + dt.timedelta(microseconds=1))
            if previous_fire_time
            else now
        )
        for date in self._dates_from(start.astimezone(self.zone).date() - dt.timedelta(days=1)):
            fire = self._fire_on(date)
            if fire >= start:
                return fire
        raise AssertionError("unreachable")

    def __str__(self) -> str:
        when = f"{self.hour:02d}:{self.minute:02d} {self.zone.key}"
        return f"monthly on day {self.day} at {when}" if self.day else f"daily at {when}"

    def __repr__(self) -> str:
        return f"<LocalTimeTrigger ({self})>"


def _hm(value: str) -> tuple[int, int]:
    hour, minute = value.split(":")
    return int(hour), int(minute)


# --- months --------------------------------------------------------------------------------------


def month_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def previous_month(day: dt.date) -> str:
    return month_of(day.replace(day=1) - dt.timedelta(days=1))


def months_to_reconcile(cfg: Config, now: dt.datetime) -> list[str]:
    """This month; and last month until its close day has passed (returns for it still arrive)."""
    today = now.astimezone(cfg.zone).date()
    months = [month_of(today)]
    if today.day <= cfg.schedule.close_month_day:
        months.insert(0, previous_month(today))
    return months


# --- the jobs ------------------------------------------------------------------------------------


def stage(job_id: str) -> Callable[..., Any]:
    """The stage function of a job, imported now; StageNotBuilt if its module or function is absent."""
    module_name, function = STAGES[job_id]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise StageNotBuilt(f"{module_name} is not built") from None
        raise
    func = getattr(module, function, None)
    if func is None:
        raise StageNotBuilt(f"{module_name}.{function} is not built")
    return func


def job_inbox(cfg: Config, now: dt.datetime) -> Any:
    return stage("inbox")(cfg)


def job_queue_export(cfg: Config, now: dt.datetime) -> Any:
    return stage("queue_export")(cfg)


def job_returns_pull(cfg: Config, now: dt.datetime) -> Any:
    return stage("returns_pull")(cfg)


def job_reconcile(cfg: Config, now: dt.datetime) -> Any:
    reconcile_month = stage("reconcile")
    return {
        month: counts_of(reconcile_month(cfg, month)) for month in months_to_reconcile(cfg, now)
    }


def job_dispatch(cfg: Config, now: dt.datetime) -> Any:
    return stage("dispatch")(cfg)


def job_close_month(cfg: Config, now: dt.datetime) -> Any:
    month = previous_month(now.astimezone(cfg.zone).date())
    return {month: counts_of(stage("close_month")(cfg, month))}


def job_key_expiry(cfg: Config, now: dt.datetime) -> Any:
    items = stage("key_expiry")(cfg)
    counts: dict[str, Any] = {"ok": 0, "warn": 0, "fail": 0}
    for item in items:
        counts[item.status] += 1
    # Key fingerprints and dates are not PHI; status shows them under "needs a person".
    counts["problems"] = [
        {"what": i.what, "status": i.status, "detail": i.detail} for i in items if i.status != "ok"
    ]
    return counts


def job_retention(cfg: Config, now: dt.datetime) -> Any:
    return stage("retention")(cfg, now)


@dataclass(frozen=True)
class Job:
    id: str
    trigger: BaseTrigger
    func: Callable[[Config, dt.datetime], Any]
    misfire_grace_seconds: int
    poll: bool  # an interval job: runs once at start too


def job_list(cfg: Config) -> list[Job]:
    """The schedule, rebuilt from the configuration at every start (no persistent job store)."""
    s, zone = cfg.schedule, cfg.zone
    grace = s.misfire_grace_minutes * 60

    def every(job_id: str, minutes: int, func: Callable) -> Job:
        # A poll later than one interval is superseded by the next one.
        return Job(
            job_id, IntervalTrigger(minutes=minutes, timezone=zone), func, minutes * 60, True
        )

    def daily(job_id: str, at: str, func: Callable, day: int | None = None) -> Job:
        return Job(job_id, LocalTimeTrigger(*_hm(at), zone, day), func, grace, False)

    return [
        every("inbox", s.inbox_every_minutes, job_inbox),
        every("returns_pull", s.returns_pull_every_minutes, job_returns_pull),
        daily("reconcile", s.reconcile_at, job_reconcile),
        every("dispatch", s.dispatch_every_minutes, job_dispatch),
        daily("close_month", s.close_month_at, job_close_month, day=s.close_month_day),
        daily("queue_export", s.queue_export_at, job_queue_export),
        daily("key_expiry", s.key_check_at, job_key_expiry),
        daily("retention", s.retention_at, job_retention),
    ]


def jobs_by_id(cfg: Config) -> dict[str, Job]:
    return {job.id: job for job in job_list(cfg)}


# --- running one job -----------------------------------------------------------------------------


def _now_text(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat(timespec="microseconds")


def counts_of(result: Any) -> Any:
    """What a stage returned, reduced to counts (numbers, booleans, nested dicts of them, list
    lengths): job_run and the audit log never hold PHI. Strings survive only under 'problems'."""
    if is_dataclass(result) and not isinstance(result, type):
        result = asdict(result)
    if isinstance(result, bool | int | float) or result is None:
        return result
    if isinstance(result, list | tuple | set | frozenset):
        return len(result)
    if isinstance(result, dict):
        out = {}
        for key, value in result.items():
            if key == "problems" and isinstance(value, list):
                out[str(key)] = value
                continue
            value = counts_of(value)
            if value is not None and not isinstance(value, str):
                out[str(key)] = value
        return out
    return None


def _error_reason(e: BaseException) -> str:
    # Our own errors carry a message written for the user (what and where); anything else may
    # quote input, so only its type is kept.
    if isinstance(e, InputError | OperationalError | StageNotBuilt):
        return str(e)[:300]
    return type(e).__name__


def start_run(conn: sqlite3.Connection, job_id: str, runner: str, now: dt.datetime) -> int:
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO job_run (job, started_at, detail) VALUES (?, ?, ?)",
            (
                job_id,
                _now_text(now),
                json.dumps({"runner": runner, "host": socket.gethostname(), "pid": os.getpid()}),
            ),
        )
    return int(cur.lastrowid)


def finish_run(
    conn: sqlite3.Connection,
    key: bytes,
    run_id: int,
    job_id: str,
    outcome: str,
    detail: dict,
    now: dt.datetime,
) -> None:
    body = json.dumps(detail, sort_keys=True, separators=(",", ":"))
    with transaction(conn):
        conn.execute(
            "UPDATE job_run SET finished_at = ?, outcome = ?, detail = ? WHERE id = ?",
            (_now_text(now), outcome, body, run_id),
        )
        audit.record(
            conn,
            key,
            "job.finished",
            job_id,
            at=now,
            run=run_id,
            outcome=outcome,
            counts=detail.get("counts"),
        )


def run_job(
    cfg: Config, job_id: str, runner: str = "cli", now: Callable[[], dt.datetime] | None = None
) -> str:
    """Run one job with its job_run row and audit event; return the outcome. Never raises for a
    stage failure (that is the outcome 'failed'); raises only when the store itself is unusable."""
    clock = now or (lambda: dt.datetime.now(dt.UTC))
    job = jobs_by_id(cfg)[job_id]
    key = audit.read_key(cfg.audit.key_file)
    conn = open_store(cfg.store.path)
    try:
        started = clock()
        run_id = start_run(conn, job_id, runner, started)
        logs.event(log, "job.started", job=job_id, run=run_id, runner=runner)
        detail: dict[str, Any] = {"runner": runner}
        try:
            detail["counts"] = counts_of(job.func(cfg, started))
            outcome = "ok"
        except StageNotBuilt as e:
            outcome, detail["reason"] = "not_built", _error_reason(e)
            logs.event(
                log,
                "job.not_built",
                level=logging.WARNING,
                job=job_id,
                run=run_id,
                reason=detail["reason"],
            )
        except Exception as e:  # noqa: BLE001 - a failed stage must not stop the service
            outcome, detail["reason"] = "failed", _error_reason(e)
            logs.event(
                log,
                "job.failed",
                level=logging.ERROR,
                exc_info=True,
                job=job_id,
                run=run_id,
                error_type=type(e).__name__,
            )
        finish_run(conn, key, run_id, job_id, outcome, detail, clock())
        logs.event(log, "job.finished", job=job_id, run=run_id, outcome=outcome)
        return outcome
    finally:
        conn.close()


def mark_interrupted(
    conn: sqlite3.Connection, key: bytes, now: dt.datetime
) -> list[tuple[int, str]]:
    """Close the job_run rows that a killed process left open; return (run id, job) of each.
    Called by `run` while it holds the instance lock, so an open service row is a dead one; an
    open row of a command run on this host is closed when its process no longer exists."""
    rows = conn.execute(
        "SELECT id, job, detail FROM job_run WHERE finished_at IS NULL ORDER BY id"
    ).fetchall()
    closed = []
    with transaction(conn):
        for row in rows:
            try:
                detail = json.loads(row["detail"] or "{}")
            except json.JSONDecodeError:
                continue
            if not isinstance(detail, dict) or not _abandoned(detail):
                continue
            detail["reason"] = (
                "the service stopped before the job finished; resumed at the next start"
            )
            conn.execute(
                "UPDATE job_run SET finished_at = ?, outcome = 'interrupted', detail = ? WHERE id = ?",
                (_now_text(now), json.dumps(detail, sort_keys=True), row["id"]),
            )
            audit.record(conn, key, "job.interrupted", row["job"], at=now, run=row["id"])
            closed.append((row["id"], row["job"]))
    return closed


def _abandoned(detail: dict) -> bool:
    if detail.get("runner") == "service":
        return True
    pid = detail.get("pid")
    if detail.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def due_at_start(cfg: Config, conn: sqlite3.Connection, now: dt.datetime) -> dict[str, str]:
    """Jobs to run as soon as `run` starts, with the reason: every poll; a job whose last run was
    interrupted; a daily/monthly job whose time passed while no service ran; all if run_at_start."""
    first = conn.execute("SELECT min(started_at) FROM job_run").fetchone()[0]
    due: dict[str, str] = {}
    for job in job_list(cfg):
        last = conn.execute(
            "SELECT started_at, outcome FROM job_run WHERE job = ? ORDER BY id DESC LIMIT 1",
            (job.id,),
        ).fetchone()
        reference = last["started_at"] if last else first
        if cfg.schedule.run_at_start:
            due[job.id] = "run_at_start"
        elif last is not None and last["outcome"] == "interrupted":
            due[job.id] = "resume"
        elif job.poll:
            due[job.id] = "poll"
        elif reference is not None:
            after = dt.datetime.fromisoformat(reference) + dt.timedelta(microseconds=1)
            if job.trigger.get_next_fire_time(None, after) <= now:
                due[job.id] = "missed"
    return due
