"""`report`: the month's numbers for the billing lead, and one self-contained HTML page.

The page is checked the way a browser with no network would see it: parsed with lxml's HTML
parser, it must reference nothing outside itself (no URL, script, stylesheet link or image)
and hold the inline SVG charts and the expected numbers. A headless Chromium screenshot is the
documented manual check (docs/report-check.md)."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest

from ccm_connector import report
from ccm_connector.config import Config, load_config
from ccm_connector.store import open_store

NOW = dt.datetime(2026, 11, 24, 18, 0, tzinfo=dt.UTC)  # 24 November in Chicago: 7 days left
CLI = Path(sys.executable).parent / "ccm-connector"


def line(code: str, units: int = 1) -> dict:
    return {"code": code, "units": units, "date_of_service": "2026-11-30"}


def finding(code: str, severity: str, minutes: int | None = None, **extra: str) -> dict:
    return {
        "code": code,
        "severity": severity,
        **({"minutes": minutes} if minutes is not None else {}),
        "message": "m",
        **extra,
    }


def add_month(
    conn: sqlite3.Connection,
    mrn: str,
    state: str,
    program: str,
    countable: int,
    lines: list[dict],
    findings: list[dict] = (),
    reconciliation: list[dict] = (),
    excluded: int = 0,
) -> None:
    decision = {
        "patient": mrn,
        "month": "2026-11",
        "program": program,
        "billable": bool(lines),
        "lines": lines,
        "minutes": {"countable": countable, "excluded": excluded},
        "findings": list(findings),
        "rules": "cms-2026",
    }
    facts = {"patient": {"id": mrn}, "month": "2026-11", "program": program, "setting": "physician"}
    conn.execute(
        "INSERT INTO patient_month (mrn, month, state, billable, facts, decision, reconciliation, packet, packet_hash, updated_at)"
        " VALUES (?, '2026-11', ?, ?, ?, ?, ?, '{}', 'h', '2026-11-24T00:00:00+00:00')",
        (
            mrn,
            state,
            int(bool(lines)),
            json.dumps(facts),
            json.dumps(decision),
            json.dumps(list(reconciliation)),
        ),
    )


def fill(conn: sqlite3.Connection) -> None:
    add_month(
        conn,
        "MRN-A",
        "awaiting_signoff",
        "ccm",
        45,
        [line("99490"), line("99439")],
        reconciliation=[
            finding("UNLOGGED_PRACTICE_TIME", "warn", 0, source="tp-9", entry=None),
            finding("PERFORMER_MISMATCH", "exclude", 5, entry="e-1", source="tp-3"),
        ],
    )
    add_month(conn, "MRN-B", "signed", "ccm", 35, [line("99490")])
    add_month(
        conn,
        "MRN-C",
        "not_billable",
        "ccm",
        12,
        [],
        excluded=10,
        findings=[
            finding("OFFSHORE_PERFORMER", "exclude", 10, entry="e-7"),
            finding("BELOW_THRESHOLD", "block"),
        ],
    )
    add_month(conn, "MRN-D", "released", "pcm", 30, [line("99426")])
    add_month(conn, "MRN-F", "rejected", "ccm", 22, [line("99490")])
    conn.execute(
        "INSERT INTO touchpoint (id, mrn, staff_id, start_utc, minutes, activity, summary) VALUES"
        " ('tp-9', 'MRN-A', 'RN7', '2026-11-03T15:00:00+00:00', 14, 'call', 'spoke with <b>patient</b>')"
    )
    # Enrolled (consent in force) but not reconciled yet; and one whose consent was withdrawn before November.
    for mrn, date, state in (
        ("MRN-E<x>", "2026-03-01", "given"),
        ("MRN-G", "2026-01-10", "given"),
        ("MRN-G", "2026-09-02", "withdrawn"),
    ):
        conn.execute(
            "INSERT INTO consent (mrn, program, date, status) VALUES (?, 'ccm', ?, ?)",
            (mrn, date, state),
        )


@pytest.fixture
def cfg(local_instance: Path) -> Config:
    cfg = load_config(local_instance / "connector.toml")  # America/Chicago
    fill(open_store(cfg.store.path))
    return cfg


@pytest.fixture
def data(cfg: Config) -> dict:
    return report.gather(cfg, open_store(cfg.store.path), "2026-11", NOW)


def test_gather_puts_each_patient_against_the_thresholds(data: dict) -> None:
    assert (data["month"], data["as_of"], data["days_left"], data["rules"]) == (
        "2026-11",
        "2026-11-24",
        7,
        "cms-2026",
    )
    patients = {p["mrn"]: p for p in data["patients"]}
    assert sorted(patients) == [
        "MRN-A",
        "MRN-B",
        "MRN-C",
        "MRN-D",
        "MRN-E<x>",
        "MRN-F",
    ]  # not MRN-G: withdrawn
    a = patients["MRN-A"]
    assert [m["minutes"] for m in a["thresholds"]] == [20, 40, 60]
    assert [m["code"] for m in a["thresholds"]] == ["99490", "99439 x1", "99439 x2"]
    assert (a["countable"], a["next"]["minutes"], a["gap"], a["estimated"]) == (
        45,
        60,
        15,
        "116.23",
    )
    assert [m["minutes"] for m in patients["MRN-D"]["thresholds"]] == [
        30,
        60,
        90,
    ]  # PCM 99426/99427
    e = patients["MRN-E<x>"]
    assert (e["state"], e["countable"], e["gap"], e["billable"]) == ("not reconciled", 0, 20, False)


def test_close_to_threshold_lists_who_can_still_make_it_this_month(data: dict) -> None:
    assert [
        (c["mrn"], c["gap"], c["next"]["minutes"], c["days_left"])
        for c in data["close_to_threshold"]
    ] == [
        ("MRN-B", 5, 40, 7),
        ("MRN-C", 8, 20, 7),
    ]


def test_a_finished_month_has_no_days_left_and_nobody_close(cfg: Config) -> None:
    later = report.gather(
        cfg, open_store(cfg.store.path), "2026-11", dt.datetime(2026, 12, 3, 18, tzinfo=dt.UTC)
    )
    assert later["days_left"] == 0 and later["close_to_threshold"] == []


def test_findings_revenue_unlogged_time_and_signoff(data: dict) -> None:
    findings = {f["code"]: f for f in data["findings"]}
    assert findings["OFFSHORE_PERFORMER"] == {
        "code": "OFFSHORE_PERFORMER",
        "severity": "exclude",
        "count": 1,
        "minutes": 10,
        "patients": 1,
    }
    assert findings["BELOW_THRESHOLD"]["count"] == 1
    assert findings["PERFORMER_MISMATCH"]["minutes"] == 5
    assert findings["UNLOGGED_PRACTICE_TIME"]["minutes"] == 14  # from the practice record it names

    revenue = data["revenue"]
    assert [
        (r["code"], r["units"], r["fee"], r["amount"], r["released"]) for r in revenue["by_code"]
    ] == [
        ("99490", 2, "66.13", "132.26", "0.00"),  # A and B; F was rejected at sign-off
        ("99426", 1, "61.78", "61.78", "61.78"),
        ("99439", 1, "50.10", "50.10", "0.00"),
    ]
    assert (revenue["total"], revenue["released"], revenue["all_confirmed"]) == (
        "244.14",
        "61.78",
        False,
    )

    assert data["unlogged"] == {
        "minutes": 14,
        "touchpoints": 1,
        "by_patient": [{"mrn": "MRN-A", "minutes": 14}],
    }
    states = data["signoff"]["states"]
    assert (
        states["awaiting_signoff"],
        states["signed"],
        states["released"],
        states["rejected"],
        states["not reconciled"],
    ) == (1, 1, 1, 1, 1)
    assert (data["signoff"]["signed"], data["signoff"]["to_sign"]) == (2, 4)


def external_references(doc: lxml.html.HtmlElement) -> list[str]:
    found = []
    for el in doc.iter():
        if not isinstance(el.tag, str):
            continue
        if el.tag in ("script", "link", "img", "iframe", "object", "embed", "base"):
            found.append(f"<{el.tag}>")
        for name, value in el.attrib.items():
            if name in (
                "src",
                "href",
                "xlink:href",
                "action",
                "formaction",
                "srcset",
                "data",
            ) or name.startswith("on"):
                found.append(f"{el.tag}@{name}={value}")
            if re.search(r"url\s*\(|https?:|//", value) and name != "viewBox":
                found.append(f"{el.tag}@{name}={value}")
    for style in doc.iter("style"):
        if re.search(r"url\s*\(|@import|https?:", style.text or ""):
            found.append("style with url/@import")
    return found


def test_the_page_is_self_contained_with_charts_and_numbers(data: dict) -> None:
    page = report.render(data)
    doc = lxml.html.document_fromstring(page)
    assert external_references(doc) == []
    assert not re.search(r"https?://", page)
    svgs = doc.findall(".//svg")
    assert len(svgs) == 6  # minutes, close to threshold, findings, revenue, unlogged time, sign-off
    minutes_svg = svgs[0]
    assert len(minutes_svg.findall(".//rect")) == 6
    dashed = [ln for ln in minutes_svg.iter("line") if ln.get("stroke-dasharray")]
    assert len(dashed) == 6 * 3  # three thresholds for each patient
    text = doc.text_content()
    for expected in (
        "$244.14",
        "$132.26",
        "$61.78",
        "2 / 4",
        "14 minutes in 1 practice touchpoint",
        "MRN-B",
        "5 min to 40 (99439 x1)",
        "OFFSHORE_PERFORMER",
        "7 day(s) left",
        "Local demonstration practice",
        "November 2026",
    ):
        assert expected in text, expected
    # Text from the store is escaped, never markup.
    assert "MRN-E<x>" in text and "<x>" not in page


def test_an_empty_month_still_renders(cfg: Config) -> None:
    page = report.render(report.gather(cfg, open_store(cfg.store.path), "2025-02", NOW))
    doc = lxml.html.document_fromstring(page)
    assert external_references(doc) == []
    assert "no enrolled patients this month" in doc.text_content()


def test_report_on_the_command_line(cfg: Config, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = subprocess.run(
        [
            str(CLI),
            "--config",
            str(cfg.source),
            "report",
            "--month",
            "2026-11",
            "--html",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["month"] == "2026-11"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it names patients by MRN
    assert "<svg" in out.read_text()
    bad = subprocess.run(
        [str(CLI), "--config", str(cfg.source), "report", "--month", "11/2026", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--month: must be YYYY-MM" in bad.stderr
    neither = subprocess.run(
        [str(CLI), "--config", str(cfg.source), "report", "--month", "2026-11"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert neither.returncode == 2 and "--html FILE" in neither.stderr
