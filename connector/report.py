"""`ccm-connector report`: one month, for the billing lead, as one self-contained HTML page.

`gather` reads the store into plain data (JSON-ready; `report --json` prints it); `render` turns
that into a single HTML string with inline CSS and inline SVG charts: no script, no stylesheet
link, no image, no URL of any kind, so it opens the same offline, in a mail client or archived.
Every text from the store goes through html.escape.

What it shows: each enrolled patient's countable minutes against the thresholds of the
program's time-based codes; patients close to the next threshold with the days left in the
month; findings by code; estimated revenue by code from the rule year's fee table; practice
time that the offshore log did not describe (UNLOGGED_PRACTICE_TIME); sign-off progress.
Patients appear by MRN: this is the practice's internal report. Nothing here is logged.
"""

from __future__ import annotations

import calendar
import datetime as dt
import html
import json
import os
import sqlite3
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from .config import Config
from .errors import InputError
from .month_facts import consent_in_force
from .records import Consent
from .rules import RuleSet, RuleSetNotFound, rule_set_for

CLOSE_MINUTES = 10  # "close to the next threshold": at most this many minutes short
STATES = (
    "released",
    "signed",
    "awaiting_signoff",
    "rejected",
    "not_billable",
    "not reconciled",
)  # progress order
STATE_LABELS = {
    "awaiting_signoff": "awaiting sign-off",
    "signed": "signed",
    "released": "released to billing",
    "rejected": "rejected",
    "not_billable": "not billable",
    "not reconciled": "not reconciled yet",
}
STATE_COLOURS = {
    "released": "#1b7f3b",
    "signed": "#4caf50",
    "awaiting_signoff": "#f0a202",
    "rejected": "#c62828",
    "not_billable": "#9e9e9e",
    "not reconciled": "#cfd8dc",
}
SEVERITY_COLOURS = {"block": "#c62828", "exclude": "#ef6c00", "warn": "#f0a202", "info": "#607d8b"}


def parse_month(value: str) -> str:
    try:
        day = dt.datetime.strptime(value, "%Y-%m").date()
    except ValueError:
        raise InputError(f"--month: must be YYYY-MM, got {value!r}") from None
    return f"{day.year:04d}-{day.month:02d}"


# --- rule year data (rules.rule_set_for) ----------------------------------------------------------


def thresholds(rule_set: RuleSet | None, program: str, setting: str) -> list[dict[str, Any]]:
    """Minutes at which the program's staff-time family bills one more unit: base, then add-ons."""
    prog = rule_set.programs.get(program) if rule_set else None
    if prog is None:
        return []
    families = prog.families.get(setting) or ()
    family = next((f for f in families if f.route == "pool" and not f.complex), None)
    if family is None:
        return []
    out = [{"minutes": family.threshold, "code": family.base}]
    if family.add_on:
        out += [
            {"minutes": family.threshold + k * family.increment, "code": f"{family.add_on} x{k}"}
            for k in range(1, family.cap + 1)
        ]
    return out


def fee_of(rule_set: RuleSet | None, code: str) -> tuple[Decimal | None, bool]:
    fee = rule_set.fees.get(code) if rule_set else None
    return (fee.amount, fee.confirmed) if fee else (None, False)


# --- gather ---------------------------------------------------------------------------------------


def _json(text: str | None, default: Any) -> Any:
    try:
        value = json.loads(text) if text else default
    except json.JSONDecodeError:
        return default
    return value if isinstance(value, type(default)) else default


def _enrolled(conn: sqlite3.Connection, month: str) -> dict[str, str]:
    """MRN -> program of every patient whose consent is in force in the month (after merges)."""
    merged = {r[0]: r[1] for r in conn.execute("SELECT retired_mrn, surviving_mrn FROM mrn_merge")}
    consents: dict[str, list[Consent]] = defaultdict(list)
    for r in conn.execute(
        "SELECT mrn, program, date, practitioner_npi, status, document_id FROM consent ORDER BY id"
    ):
        try:
            day = dt.date.fromisoformat(r["date"])
        except (TypeError, ValueError):
            continue
        mrn = merged.get(r["mrn"], r["mrn"])
        consents[mrn].append(
            Consent(mrn, r["program"], day, r["practitioner_npi"], r["status"], r["document_id"])
        )
    out = {}
    for mrn, items in consents.items():
        current = consent_in_force(items, month)
        if current is not None:
            out[mrn] = current.program
    return out


def gather(
    cfg: Config, conn: sqlite3.Connection, month: str, now: dt.datetime | None = None
) -> dict[str, Any]:
    month = parse_month(month)
    today = (now or dt.datetime.now(dt.UTC)).astimezone(cfg.zone).date()
    year, mon = int(month[:4]), int(month[5:7])
    first, last = dt.date(year, mon, 1), dt.date(year, mon, calendar.monthrange(year, mon)[1])
    days_left = 0 if today > last else (last - max(today, first)).days + 1
    try:
        rule_set: RuleSet | None = rule_set_for(month)
    except RuleSetNotFound:
        rule_set = None

    def touchpoint_minutes(tp_id: str) -> int:
        found = conn.execute("SELECT minutes FROM touchpoint WHERE id = ?", (tp_id,)).fetchone()
        return int(found[0]) if found else 0

    rows = {
        r["mrn"]: r
        for r in conn.execute("SELECT * FROM patient_month WHERE month = ? ORDER BY mrn", (month,))
    }
    enrolled = _enrolled(conn, month)

    patients = []
    findings: dict[str, dict[str, Any]] = {}
    revenue: dict[str, dict[str, Any]] = {}
    unlogged_total = unlogged_count = 0
    for mrn in sorted(set(rows) | set(enrolled)):
        row = rows.get(mrn)
        facts = _json(row["facts"], {}) if row else {}
        decision = _json(row["decision"], {}) if row else {}
        reconciliation = _json(row["reconciliation"], []) if row else []
        program = decision.get("program") or facts.get("program") or enrolled.get(mrn, "ccm")
        setting = facts.get("setting") or cfg.billing.setting_kind
        state = row["state"] if row else "not reconciled"
        minutes = decision.get("minutes") or {}
        countable = int(minutes.get("countable") or 0)
        marks = thresholds(rule_set, program, setting)
        upcoming = next((m for m in marks if m["minutes"] > countable), None)
        lines = [ln for ln in decision.get("lines", []) if isinstance(ln, dict)]
        amount = Decimal(0)
        if row and row["billable"] and state != "rejected":
            for line in lines:
                fee, confirmed = fee_of(rule_set, str(line.get("code")))
                units = int(line.get("units") or 0)
                item = revenue.setdefault(
                    str(line.get("code")),
                    {
                        "code": str(line.get("code")),
                        "units": 0,
                        "fee": fee,
                        "amount": Decimal(0),
                        "confirmed": confirmed,
                        "released": Decimal(0),
                    },
                )
                item["units"] += units
                if fee is not None:
                    item["amount"] += fee * units
                    amount += fee * units
                    if state == "released":
                        item["released"] += fee * units
        unlogged = 0
        for f in list(decision.get("findings", [])) + list(reconciliation):
            if not isinstance(f, dict) or "code" not in f:
                continue
            code = str(f["code"])
            extra = int(f.get("minutes") or 0)
            if code == "UNLOGGED_PRACTICE_TIME":
                extra = extra or touchpoint_minutes(str(f.get("source")))
                unlogged += extra
                unlogged_count += 1
            item = findings.setdefault(
                code,
                {
                    "code": code,
                    "severity": f.get("severity", ""),
                    "count": 0,
                    "minutes": 0,
                    "patients": set(),
                },
            )
            item["count"] += 1
            item["minutes"] += extra
            item["patients"].add(mrn)
        unlogged_total += unlogged
        patients.append(
            {
                "mrn": mrn,
                "program": program,
                "state": state,
                "billable": bool(row["billable"]) if row else False,
                "countable": countable,
                "excluded": int(minutes.get("excluded") or 0),
                "thresholds": marks,
                "next": upcoming,
                "gap": upcoming["minutes"] - countable if upcoming else None,
                "codes": [
                    {"code": str(ln.get("code")), "units": int(ln.get("units") or 0)}
                    for ln in lines
                ],
                "estimated": _money(amount) if lines else None,
                "unlogged_minutes": unlogged,
            }
        )

    close = sorted(
        (
            p
            for p in patients
            if p["gap"] is not None and p["gap"] <= CLOSE_MINUTES and days_left > 0
        ),
        key=lambda p: (p["gap"], p["mrn"]),
    )
    states = {s: 0 for s in STATES}
    for p in patients:
        states[p["state"]] = states.get(p["state"], 0) + 1
    to_sign = (
        states["awaiting_signoff"] + states["signed"] + states["released"] + states["rejected"]
    )
    revenue_rows = sorted(revenue.values(), key=lambda r: (-(r["amount"]), r["code"]))
    return {
        "practice": {
            "id": cfg.practice.id,
            "name": cfg.practice.name,
            "time_zone": cfg.practice.time_zone,
        },
        "month": month,
        "as_of": today.isoformat(),
        "days_left": days_left,
        "rules": rule_set.name if rule_set else None,
        "patients": patients,
        "close_to_threshold": [
            {
                "mrn": p["mrn"],
                "countable": p["countable"],
                "next": p["next"],
                "gap": p["gap"],
                "days_left": days_left,
            }
            for p in close
        ],
        "findings": [
            {**{k: v for k, v in f.items() if k != "patients"}, "patients": len(f["patients"])}
            for f in sorted(findings.values(), key=lambda f: (-f["count"], f["code"]))
        ],
        "revenue": {
            "by_code": [
                {
                    **r,
                    "fee": _money(r["fee"]) if r["fee"] is not None else None,
                    "amount": _money(r["amount"]),
                    "released": _money(r["released"]),
                }
                for r in revenue_rows
            ],
            "total": _money(sum((r["amount"] for r in revenue_rows), Decimal(0))),
            "released": _money(sum((r["released"] for r in revenue_rows), Decimal(0))),
            "all_confirmed": all(r["confirmed"] for r in revenue_rows),
        },
        "unlogged": {
            "minutes": unlogged_total,
            "touchpoints": unlogged_count,
            "by_patient": [
                {"mrn": p["mrn"], "minutes": p["unlogged_minutes"]}
                for p in patients
                if p["unlogged_minutes"]
            ],
        },
        "signoff": {
            "states": states,
            "signed": states["signed"] + states["released"],
            "to_sign": to_sign,
        },
    }


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


# --- render ---------------------------------------------------------------------------------------

e = html.escape

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2933;margin:0;background:#f4f6f8}
main{max-width:1080px;margin:0 auto;padding:24px}
header{margin-bottom:16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 10px}
.sub{color:#52606d}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:12px;margin:16px 0}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .n{font-size:24px;font-weight:600}
.card .l{color:#52606d;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
section{background:#fff;border-radius:8px;padding:16px;margin:0 0 16px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
table{border-collapse:collapse;width:100%;margin-top:10px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e4e7eb;font-variant-numeric:tabular-nums}
th{font-size:12px;color:#52606d;text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right}
.note{color:#52606d;font-size:12px}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;vertical-align:-1px}
svg{display:block;max-width:100%;height:auto}
svg text{font:12px -apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#1f2933}
.empty{color:#52606d;font-style:italic}
"""


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" aria-label="{e(label)}">'
        + "".join(body)
        + "</svg>"
    )


def bar_chart(items: list[tuple[str, float, str, str]], label: str, width: int = 1000) -> str:
    """Horizontal bars: (label, value, value text, colour)."""
    if not items:
        return '<p class="empty">nothing this month</p>'
    left, right, row = 190, 110, 24
    scale = (
        (width - left - right) / max((v for _, v, _, _ in items), default=1)
        if any(v for _, v, _, _ in items)
        else 0
    )
    body = []
    for i, (name, value, text, colour) in enumerate(items):
        y = i * row + 4
        body.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{e(name)}</text>')
        body.append(
            f'<rect x="{left}" y="{y}" width="{max(value * scale, 1):.1f}" height="{row - 8}" rx="3" fill="{colour}"/>'
        )
        body.append(f'<text x="{left + value * scale + 6:.1f}" y="{y + 13}">{e(text)}</text>')
    return _svg(width, len(items) * row + 8, body, label)


def minutes_chart(patients: list[dict[str, Any]], width: int = 1000) -> str:
    """One row per patient: countable minutes, with a dashed mark at each threshold."""
    if not patients:
        return '<p class="empty">no enrolled patients this month</p>'
    left, right, row, top = 150, 150, 26, 22
    most = max(
        [p["countable"] for p in patients]
        + [m["minutes"] for p in patients for m in p["thresholds"]]
        + [1]
    )
    scale = (width - left - right) / (most * 1.05)
    body = []
    for tick in range(0, int(most * 1.05) + 1, 10 if most <= 120 else 30):
        x = left + tick * scale
        body.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + len(patients) * row}" stroke="#eef1f4"/>'
        )
        body.append(
            f'<text x="{x:.1f}" y="{top - 8}" text-anchor="middle" class="tick">{tick}</text>'
        )
    for i, p in enumerate(patients):
        y = top + i * row
        colour = (
            STATE_COLOURS.get(p["state"], "#9e9e9e")
            if p["billable"] or p["state"] == "not reconciled"
            else "#9e9e9e"
        )
        body.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end">{e(p["mrn"])} ({e(p["program"].upper())})</text>'
        )
        body.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(p["countable"] * scale, 1):.1f}" height="{row - 10}" rx="3" fill="{colour}"/>'
        )
        for mark in p["thresholds"]:
            x = left + mark["minutes"] * scale
            body.append(
                f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + row - 4}" stroke="#1f2933" stroke-dasharray="3,2">'
                f"<title>{mark['minutes']} min: {e(mark['code'])}</title></line>"
            )
        note = f"{p['countable']} min"
        if p["next"]:
            note += f" · {p['gap']} to {p['next']['minutes']}"
        body.append(f'<text x="{width - right + 8}" y="{y + 14}">{e(note)}</text>')
    shown = [
        s
        for s in STATES
        if any(p["state"] == s and (p["billable"] or s == "not reconciled") for p in patients)
    ]
    legend = "".join(
        f'<span><i style="background:{STATE_COLOURS[s]}"></i>{e(STATE_LABELS[s])}</span>'
        for s in shown
    )
    if any(not p["billable"] and p["state"] != "not reconciled" for p in patients):
        legend += '<span><i style="background:#9e9e9e"></i>not billable</span>'
    return _svg(
        width,
        top + len(patients) * row + 6,
        body,
        "countable minutes per patient against the thresholds",
    ) + (f'<p class="legend">{legend}<span>┆ threshold</span></p>')


def signoff_chart(states: dict[str, int], width: int = 1000) -> str:
    total = sum(states.values())
    if not total:
        return '<p class="empty">no patient-months this month</p>'
    body, x = [], 0.0
    for state in STATES:
        n = states.get(state, 0)
        if not n:
            continue
        w = width * n / total
        body.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="28" fill="{STATE_COLOURS[state]}"><title>{e(STATE_LABELS[state])}: {n}</title></rect>'
        )
        if w > 28:
            body.append(f'<text x="{x + w / 2:.1f}" y="18" text-anchor="middle">{n}</text>')
        x += w
    legend = "".join(
        f'<span><i style="background:{STATE_COLOURS[s]}"></i>{e(STATE_LABELS[s])} {states.get(s, 0)}</span>'
        for s in STATES
        if states.get(s)
    )
    return _svg(width, 28, body, "sign-off progress") + f'<p class="legend">{legend}</p>'


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    if not rows:
        return ""
    th = "".join(
        f"<th{' class=num' if i in numeric else ''}>{e(h)}</th>" for i, h in enumerate(head)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i in numeric else ''}>{e(str(c))}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render(data: dict[str, Any]) -> str:
    practice, month = data["practice"], data["month"]
    patients = data["patients"]
    revenue, unlogged, signoff = data["revenue"], data["unlogged"], data["signoff"]
    billable = sum(1 for p in patients if p["billable"])
    cards = [
        (len(patients), "patients"),
        (billable, "billable patient-months"),
        (f"${revenue['total']}", "estimated revenue"),
        (f"{signoff['signed']} / {signoff['to_sign']}", "signed off"),
        (len(data["close_to_threshold"]), "close to a threshold"),
        (f"{unlogged['minutes']} min", "practice time not in the log"),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>CCM report {e(month)} · {e(practice['name'])}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<header><h1>Care management report, {e(_month_name(month))}</h1>",
        f'<div class="sub">{e(practice["name"])} ({e(practice["id"])}) · as of {e(data["as_of"])} '
        f"({e(practice['time_zone'])}) · {data['days_left']} day(s) left in the month · rules {e(data['rules'] or 'none for this month')}</div></header>",
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="n">{e(str(n))}</div><div class="l">{e(label)}</div></div>'
            for n, label in cards
        )
        + "</div>",
    ]

    parts.append('<section id="minutes"><h2>Countable minutes against the thresholds</h2>')
    parts.append(
        '<p class="note">Dashed marks: the minutes at which the next code or add-on unit bills. Bar colour: sign-off state of a billable month; grey when not billable.</p>'
    )
    parts.append(minutes_chart(patients))
    parts.append(
        _table(
            [
                "MRN",
                "program",
                "state",
                "countable",
                "excluded",
                "next threshold",
                "codes",
                "estimated",
            ],
            [
                [
                    p["mrn"],
                    p["program"].upper(),
                    STATE_LABELS.get(p["state"], p["state"]),
                    p["countable"],
                    p["excluded"],
                    f"{p['next']['minutes']} ({p['next']['code']}), {p['gap']} short"
                    if p["next"]
                    else "all reached",
                    ", ".join(f"{c['code']} x{c['units']}" for c in p["codes"]) or "-",
                    f"${p['estimated']}" if p["estimated"] else "-",
                ]
                for p in patients
            ],
            {3, 4, 7},
        )
    )
    parts.append("</section>")

    parts.append(
        f'<section id="close"><h2>Close to the next threshold ({data["days_left"]} day(s) left)</h2>'
    )
    if data["close_to_threshold"]:
        parts.append(f'<p class="note">At most {CLOSE_MINUTES} minutes short of the next code.</p>')
        parts.append(
            bar_chart(
                [
                    (
                        c["mrn"],
                        c["gap"],
                        f"{c['gap']} min to {c['next']['minutes']} ({c['next']['code']})",
                        "#f0a202",
                    )
                    for c in data["close_to_threshold"]
                ],
                "minutes short of the next threshold",
            )
        )
        parts.append(
            _table(
                ["MRN", "countable", "next threshold", "short by", "days left"],
                [
                    [
                        c["mrn"],
                        c["countable"],
                        f"{c['next']['minutes']} ({c['next']['code']})",
                        c["gap"],
                        c["days_left"],
                    ]
                    for c in data["close_to_threshold"]
                ],
                {1, 3, 4},
            )
        )
    else:
        parts.append(
            '<p class="empty">nobody is within reach of a threshold'
            + (" (the month is over)" if not data["days_left"] else "")
            + "</p>"
        )
    parts.append("</section>")

    parts.append('<section id="findings"><h2>Findings by code</h2>')
    parts.append(
        bar_chart(
            [
                (
                    f["code"],
                    f["count"],
                    str(f["count"]),
                    SEVERITY_COLOURS.get(f["severity"], "#607d8b"),
                )
                for f in data["findings"]
            ],
            "findings by code",
        )
    )
    parts.append(
        _table(
            ["code", "severity", "findings", "patients", "minutes"],
            [
                [f["code"], f["severity"], f["count"], f["patients"], f["minutes"]]
                for f in data["findings"]
            ],
            {2, 3, 4},
        )
    )
    parts.append("</section>")

    parts.append('<section id="revenue"><h2>Estimated revenue by code</h2>')
    parts.append(
        f'<p class="note">National non-facility amounts from the {e(data["rules"] or "-")} fee table for billable patient-months not rejected at sign-off'
        + (
            ""
            if revenue["all_confirmed"]
            else "; some amounts are approximate (unconfirmed against the CMS file)"
        )
        + f". Released to billing so far: ${e(revenue['released'])}.</p>"
    )
    parts.append(
        bar_chart(
            [
                (r["code"], float(r["amount"]), f"${r['amount']}", "#1b7f3b")
                for r in revenue["by_code"]
            ],
            "estimated revenue by code",
        )
    )
    parts.append(
        _table(
            ["code", "units", "fee", "amount", "released"],
            [
                [
                    r["code"],
                    r["units"],
                    f"${r['fee']}" if r["fee"] else "no fee",
                    f"${r['amount']}",
                    f"${r['released']}",
                ]
                for r in revenue["by_code"]
            ]
            + (
                [["total", "", "", f"${revenue['total']}", f"${revenue['released']}"]]
                if revenue["by_code"]
                else []
            ),
            {1, 2, 3, 4},
        )
    )
    parts.append("</section>")

    parts.append('<section id="unlogged"><h2>Practice time the offshore log missed</h2>')
    parts.append(
        f'<p class="note">{unlogged["minutes"]} minutes in {unlogged["touchpoints"]} practice touchpoint(s) that no offshore log entry describes: '
        "time the practice may be losing until the log catches up.</p>"
    )
    parts.append(
        bar_chart(
            [
                (u["mrn"], u["minutes"], f"{u['minutes']} min", "#607d8b")
                for u in unlogged["by_patient"]
            ],
            "unlogged practice minutes by patient",
        )
    )
    parts.append("</section>")

    parts.append('<section id="signoff"><h2>Sign-off progress</h2>')
    parts.append(
        f'<p class="note">{signoff["signed"]} of {signoff["to_sign"]} billable patient-months signed or released.</p>'
    )
    parts.append(signoff_chart(signoff["states"]))
    parts.append("</section>")
    parts.append(
        '<p class="note">Generated by ccm-connector. Estimates only: the billing system decides what is paid.</p>'
    )
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _month_name(month: str) -> str:
    return f"{calendar.month_name[int(month[5:7])]} {month[:4]}"


def write_html(path: Path, page: str) -> Path:
    """Write the page atomically, readable by its owner only (it names patients by MRN)."""
    path = path.expanduser()
    if path.is_dir():
        raise InputError(f"--html {path}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"--html {path}: folder {path.parent} does not exist")
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
