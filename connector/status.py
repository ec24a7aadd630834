"""`ccm-connector status`: counters, the last run of each job, and what needs a person now.

`gather` is a pure read of the store (plus the configured job list); `render` turns its result
into text. `status --json` prints the gathered dict. Counts, ids of jobs and months, reasons and
key fingerprints only: no patient appears here.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from . import jobs
from .config import Config

# "Now" for things that stay in the store after they happened (quarantined input, refused returns).
RECENT = dt.timedelta(days=7)
MONTHS_SHOWN = 3


def _count(conn: sqlite3.Connection, sql: str, *params: Any) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def _by(conn: sqlite3.Connection, sql: str, *params: Any) -> dict[str, int]:
    return {str(row[0]): int(row[1]) for row in conn.execute(sql, params)}


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


def counters(conn: sqlite3.Connection) -> dict[str, Any]:
    messages = _by(conn, "SELECT status, count(*) FROM inbound_message GROUP BY status")
    returns = _by(conn, "SELECT status, count(*) FROM return_file GROUP BY status")
    batches = _by(conn, "SELECT status, count(*) FROM queue_batch GROUP BY status")
    return {
        "received": sum(messages.values()),
        "messages": messages,  # by status: received | mapped | ignored | rejected | conflict
        "quarantined": _count(conn, "SELECT count(*) FROM quarantine"),
        "exchange_quarantined": _count(conn, "SELECT count(*) FROM exchange_quarantine"),
        "conflicts": messages.get("conflict", 0),
        "queued": _count(conn, "SELECT count(*) FROM queue_item"),  # items put in work queues
        "sent": batches.get("sent", 0),  # work-queue files published to the drop
        "queue_files_unsent": batches.get("sealed", 0),
        "returns_accepted": returns.get("accepted", 0),
        "returns_refused": returns.get("refused", 0),
        "outbound": _by(
            conn, "SELECT status, count(*) FROM outbound GROUP BY status"
        ),  # pending | sent | failed
    }


def patient_months(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Patient-months by state for the latest months that have any."""
    months = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT month FROM patient_month ORDER BY month DESC LIMIT ?", (MONTHS_SHOWN,)
        )
    ]
    return {
        month: _by(
            conn,
            "SELECT state, count(*) FROM patient_month WHERE month = ? GROUP BY state ORDER BY state",
            month,
        )
        for month in sorted(months)
    }


def last_runs(cfg: Config, conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The latest run of every scheduled job (and of any other job name recorded)."""
    names = [job.id for job in jobs.job_list(cfg)]
    names += [
        r[0]
        for r in conn.execute("SELECT DISTINCT job FROM job_run ORDER BY job")
        if r[0] not in names
    ]
    out = []
    for name in names:
        row = conn.execute(
            "SELECT id, started_at, finished_at, outcome, detail FROM job_run WHERE job = ? ORDER BY id DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None:
            out.append({"job": name, "outcome": "never run"})
            continue
        try:
            detail = json.loads(row["detail"]) if row["detail"] else {}
        except json.JSONDecodeError:
            detail = {}
        out.append(
            {
                "job": name,
                "run": row["id"],
                "started_at": row["started_at"],
                "finished_at": row["finished_at"],
                "outcome": row["outcome"] or "running",
                "detail": detail if isinstance(detail, dict) else {},
            }
        )
    return out


def needs_attention(
    conn: sqlite3.Connection, runs: list[dict[str, Any]], now: dt.datetime
) -> list[dict[str, Any]]:
    """Each item: what, how many, and why a person should look."""
    since = _stamp(now - RECENT)
    items: list[dict[str, Any]] = []

    def add(what: str, count: int, reason: str) -> None:
        if count:
            items.append({"what": what, "count": count, "reason": reason})

    reasons = _by(
        conn,
        "SELECT reason, count(*) FROM quarantine WHERE julianday(at) >= julianday(?) GROUP BY reason ORDER BY 2 DESC",
        since,
    )
    add("quarantined HL7 input", sum(reasons.values()), "last 7 days: " + _top(reasons))
    reasons = _by(
        conn,
        "SELECT reason, count(*) FROM exchange_quarantine WHERE julianday(at) >= julianday(?) GROUP BY reason ORDER BY 2 DESC",
        since,
    )
    add("quarantined exchange files", sum(reasons.values()), "last 7 days: " + _top(reasons))
    add(
        "conflicting messages",
        _count(conn, "SELECT count(*) FROM inbound_message WHERE status = 'conflict'"),
        "a message contradicts what the store holds; resolve in the EHR and resend",
    )
    reasons = _by(
        conn,
        "SELECT reason, count(*) FROM return_file WHERE status = 'refused' AND julianday(received_at) >= julianday(?) GROUP BY reason ORDER BY 2 DESC",
        since,
    )
    add("refused returns", sum(reasons.values()), "last 7 days: " + _top(reasons))
    for month, n in _by(
        conn,
        "SELECT month, count(*) FROM patient_month WHERE state = 'awaiting_signoff' GROUP BY month ORDER BY month",
    ).items():
        add(
            f"patient-months of {month} awaiting sign-off",
            n,
            "the billing physician has not signed the review packet",
        )
    for month, n in _by(
        conn,
        "SELECT month, count(*) FROM patient_month WHERE state = 'rejected' GROUP BY month ORDER BY month",
    ).items():
        add(
            f"patient-months of {month} rejected at sign-off",
            n,
            "rejected by the billing physician; correct and reconcile again",
        )
    for kind, n in _by(
        conn,
        "SELECT kind, count(*) FROM outbound WHERE status = 'failed' GROUP BY kind ORDER BY kind",
    ).items():
        add(f"failed outbound {kind}", n, "delivery failed; see the log and `doctor`")
    for run in runs:
        if run["outcome"] == "failed":
            add(
                f"job {run['job']} failed",
                1,
                f"last run {run['started_at']}: {run['detail'].get('reason', 'see the log')}",
            )
        if run["job"] == "key_expiry" and run["outcome"] == "ok":
            for problem in run["detail"].get("counts", {}).get("problems", []):
                add(
                    str(problem.get("what")), 1, f"{problem.get('status')}: {problem.get('detail')}"
                )
    return items


def _top(reasons: dict[str, int], n: int = 3) -> str:
    return "; ".join(f"{count} x {reason}" for reason, count in list(reasons.items())[:n])


def gather(cfg: Config, conn: sqlite3.Connection, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    runs = last_runs(cfg, conn)
    return {
        "practice": cfg.practice.id,
        "as_of": _stamp(now),
        "counters": counters(conn),
        "patient_months": patient_months(conn),
        "jobs": runs,
        "needs_attention": needs_attention(conn, runs, now),
    }


def render(status: dict[str, Any]) -> str:
    c = status["counters"]
    out = [f"ccm-connector status of {status['practice']} at {status['as_of']}", ""]
    out.append(
        f"HL7: {c['received']} received ({', '.join(f'{k} {v}' for k, v in sorted(c['messages'].items())) or 'none'}), "
        f"{c['quarantined']} quarantined, {c['conflicts']} conflicts"
    )
    out.append(
        f"work queues: {c['queued']} items queued, {c['sent']} files sent, {c['queue_files_unsent']} sealed and not yet sent"
    )
    out.append(
        f"returns: {c['returns_accepted']} accepted, {c['returns_refused']} refused; "
        f"{c['exchange_quarantined']} exchange files quarantined"
    )
    outbound = c["outbound"]
    out.append(
        f"outbound: {outbound.get('sent', 0)} sent, {outbound.get('pending', 0)} pending, {outbound.get('failed', 0)} failed"
    )
    out.append("")
    out.append("patient-months:")
    if not status["patient_months"]:
        out.append("  none yet")
    for month, states in status["patient_months"].items():
        out.append(f"  {month}: " + ", ".join(f"{n} {state}" for state, n in states.items()))
    out.append("")
    out.append("jobs (last run):")
    for run in status["jobs"]:
        if run["outcome"] == "never run":
            out.append(f"  {run['job']:<13} never run")
            continue
        extra = run["detail"].get("reason") or _counts_text(run["detail"].get("counts"))
        out.append(
            f"  {run['job']:<13} {run['outcome']:<11} {run['started_at']}"
            + (f"  {extra}" if extra else "")
        )
    out.append("")
    attention = status["needs_attention"]
    out.append("needs a person now:" if attention else "needs a person now: nothing")
    for item in attention:
        out.append(f"  ! {item['what']}: {item['count']} ({item['reason']})")
    return "\n".join(out)


def _counts_text(counts: Any) -> str:
    if isinstance(counts, dict):
        return ", ".join(
            f"{k} {v}"
            for k, v in counts.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        )
    return "" if counts is None else str(counts)
