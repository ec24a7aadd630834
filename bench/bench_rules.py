"""Benchmark the rules engine and `rules check` on 10,000 varied patient-months; prints figures.

    .venv/bin/python bench/bench_rules.py [COUNT]

No assertions on time (DESIGN.md: benchmarks print figures).
"""

from __future__ import annotations

import calendar
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ccm_connector.facts import CARE_PLAN_ELEMENTS, facts_from_json
from ccm_connector.rules import decide, rule_set_for
from ccm_connector.rules_cli import rules_check

BILLER = "1234567893"
OTHER = "1245319599"
STAFF = {
    "RN1": {"role": "clinical", "location": "US", "supervisor": BILLER},
    "RN2": {"role": "clinical", "location": "US", "supervisor": BILLER},
    "MA3": {"role": "clinical", "location": "PR", "supervisor": BILLER},
    "DR1": {"role": "practitioner", "location": "US", "npi": BILLER},
    "RN-OTHER": {"role": "clinical", "location": "US", "supervisor": OTHER},
    "RN-PH": {"role": "clinical", "location": "PH", "supervisor": BILLER},
    "RN-X": {"role": "clinical", "location": "US", "supervisor": BILLER, "excluded": True},
    "SCH": {"role": "non_clinical", "location": "US"},
}
# Weighted: most time is by countable in-house staff.
PERFORMERS = (
    ["RN1"] * 6 + ["RN2"] * 4 + ["DR1"] * 3 + ["MA3", "RN-OTHER", "RN-PH", "RN-X", "SCH", "GHOST"]
)
MONTHS = [f"{y}-{m:02d}" for y in (2024, 2025, 2026) for m in range(1, 13)]
OTHER_CODES = ["99490", "G0181", "90960", "99495", "99484", "99457", "99213", "G0557", "99424"]


def patient_month(rng: random.Random, n: int) -> dict[str, Any]:
    month = rng.choice(MONTHS)
    year, mon = int(month[:4]), int(month[5:])
    first = date(year, mon, 1)
    days = calendar.monthrange(year, mon)[1]
    consent = (
        first - timedelta(days=rng.choice([30, 200, 400]))
        if rng.random() < 0.95
        else first + timedelta(days=10)
    )

    def day() -> str:
        return (first + timedelta(days=rng.randrange(days))).isoformat()

    time_entries = [
        {
            "id": f"tp-{n}-{i}",
            "date": day() if rng.random() < 0.97 else (first - timedelta(days=2)).isoformat(),
            "minutes": rng.randint(3, 35),
            "staff": rng.choice(PERFORMERS),
            "counted_for": None if rng.random() < 0.95 else rng.choice(["tcm", "bhi", "rpm"]),
        }
        for i in range(rng.randint(0, 10))
    ]
    return {
        "patient": {
            "id": f"MRN-{n:06d}",
            "chronic_conditions": rng.sample(
                ["E11.9", "I10", "N18.3", "J44.9", "I50.9"], rng.choice([1, 2, 2, 3, 4])
            ),
            "qmb": rng.random() < 0.2,
            "last_visit_before_consent": (
                consent - timedelta(days=rng.choice([20, 90, 500]))
            ).isoformat(),
            "died_on": day() if rng.random() < 0.02 else None,
        },
        "month": month,
        "program": rng.choice(["ccm"] * 6 + ["pcm", "apcm"]),
        "setting": rng.choice(["physician"] * 6 + ["fqhc", "rhc"]),
        "billing_practitioner": BILLER,
        "complex_mdm": rng.random() < 0.2,
        "consent": {"date": consent.isoformat(), "practitioner": BILLER}
        if rng.random() < 0.97
        else None,
        "initiating_visit": {
            "date": consent.isoformat(),
            "code": rng.choice(["99214", "99213", "G0438", "99211"]),
            "practitioner": BILLER,
            "ccm_discussed": rng.random() < 0.95,
        },
        "care_plan": {
            "date": consent.isoformat(),
            "reviewed": (first - timedelta(days=rng.choice([10, 100, 500]))).isoformat(),
            "shared_with_patient": consent.isoformat() if rng.random() < 0.9 else None,
            "elements": list(CARE_PLAN_ELEMENTS)
            if rng.random() < 0.9
            else list(CARE_PLAN_ELEMENTS[:5]),
        },
        "staff": STAFF,
        "time": time_entries,
        "inpatient_stays": [{"from": day(), "to": (first + timedelta(days=days - 1)).isoformat()}]
        if rng.random() < 0.05
        else [],
        "other_services": [
            {
                "code": rng.choice(OTHER_CODES),
                "practitioner": rng.choice([BILLER, OTHER]),
                "date": day(),
            }
            for _ in range(rng.choice([0] * 8 + [1, 2]))
        ],
        "policy": {
            "practitioner_time": rng.choice(["pool", "physician_codes", "maximize"]),
            "date_of_service": rng.choice(["month_end", "threshold_met"]),
        },
    }


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rng = random.Random(20261130)
    documents = [patient_month(rng, n) for n in range(count)]
    text = json.dumps(documents)
    entries = sum(len(d["time"]) for d in documents)
    print(f"{count} patient-months, {entries} time entries, {len(text) / 1e6:.1f} MB of JSON")

    rule_set_for("2025-01")  # load the rule files once, outside the timings

    def rate(seconds: float) -> str:
        return f"{seconds:6.3f} s  {count / seconds:>10,.0f} patient-months/s"

    facts = [facts_from_json(obj, f"facts[{i}]") for i, obj in enumerate(json.loads(text))]
    started = time.perf_counter()
    decisions = [decide(f, rule_set_for(f.month)) for f in facts]
    print(f"engine: decide()          {rate(time.perf_counter() - started)}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "facts.json"
        path.write_text(text, encoding="utf-8")

        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        code = rules_check(str(path), out, err)
        print(
            f"rules_check() in process  {rate(time.perf_counter() - started)}  (read, parse, validate, decide, render)"
        )
        if code != 0:
            print(err.getvalue())

        started = time.perf_counter()
        process = subprocess.run(
            [sys.executable, "-m", "ccm_connector.rules_cli", str(path)],
            capture_output=True,
            cwd=folder,
            check=False,
        )
        elapsed = time.perf_counter() - started
    print(
        f"CLI in a subprocess       {rate(elapsed)}  exit {process.returncode}, {len(process.stdout) / 1e6:.1f} MB out"
    )
    if process.returncode != 0:
        print(process.stderr.decode(errors="replace"))
    elif process.stdout.decode("utf-8") != out.getvalue():
        print("WARNING: the subprocess output differs from the in-process output")

    billable = sum(d.billable for d in decisions)
    codes = Counter(line.code for d in decisions for line in d.lines)
    print(
        f"billable {billable} / {count}; lines: {', '.join(f'{c} {n}' for c, n in sorted(codes.items()))}"
    )


if __name__ == "__main__":
    main()
