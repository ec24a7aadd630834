"""`rules check FILE|-`: exit codes, stdout/stderr discipline, byte-identical output, stdin."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ccm_connector.rules_cli import rules_check

NPI = "1234567893"


def month_facts(
    patient: str = "MRN-1001", minutes: int = 25, month: str = "2026-11"
) -> dict[str, Any]:
    return {
        "patient": {
            "id": patient,
            "chronic_conditions": ["E11.9", "I10"],
            "last_visit_before_consent": "2026-02-10",
        },
        "month": month,
        "billing_practitioner": NPI,
        "consent": {"date": "2026-03-01", "practitioner": NPI},
        "care_plan": {
            "date": "2026-03-01",
            "reviewed": "2026-10-15",
            "shared_with_patient": "2026-03-02",
        },
        "staff": {"RN7": {"role": "clinical", "location": "US", "supervisor": NPI}},
        "time": [{"id": "tp-1", "date": f"{month}-03", "minutes": minutes, "staff": "RN7"}],
    }


def run(source: str, stdin: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = rules_check(source, out, err, stdin=io.StringIO(stdin) if stdin is not None else None)
    return code, out.getvalue(), err.getvalue()


def run_module(
    args: list[str], cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "CCM_CONNECTOR_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "ccm_connector.rules_cli", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,  # no connector.toml here: the command needs no configuration
        env=env,
        check=False,
    )


def write(tmp_path: Path, document: Any, name: str = "facts.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_object_in_object_out(tmp_path: Path) -> None:
    code, out, err = run(str(write(tmp_path, month_facts())))
    assert (code, err) == (0, "")
    decision = json.loads(out)
    assert decision["billable"] is True
    assert decision["lines"] == [{"code": "99490", "units": 1, "date_of_service": "2026-11-30"}]
    assert decision["rules"] == "cms-2026"
    assert out.endswith("}\n")


def test_array_in_array_out_in_order(tmp_path: Path) -> None:
    document = [month_facts("A", 25), month_facts("B", 5), month_facts("C", 45, month="2025-02")]
    code, out, _ = run(str(write(tmp_path, document)))
    decisions = json.loads(out)
    assert code == 0
    assert [(d["patient"], d["billable"], d["rules"]) for d in decisions] == [
        ("A", True, "cms-2026"),
        ("B", False, "cms-2026"),
        ("C", False, "cms-2025"),  # consent (2026-03-01) is after that month
    ]


def test_not_billable_still_exits_0(tmp_path: Path) -> None:
    code, out, _ = run(str(write(tmp_path, month_facts(minutes=19))))
    assert code == 0
    assert json.loads(out)["findings"][0]["code"] == "BELOW_THRESHOLD"


def test_empty_array(tmp_path: Path) -> None:
    assert run(str(write(tmp_path, []))) == (0, "[]\n", "")


def test_output_is_indented_json_without_ascii_escapes(tmp_path: Path) -> None:
    _, out, _ = run(str(write(tmp_path, month_facts("MRN-Ø1"))))
    assert '  "patient": "MRN-Ø1",\n' in out


def test_stdin_dash() -> None:
    code, out, err = run("-", stdin=json.dumps(month_facts()))
    assert (code, err) == (0, "")
    assert json.loads(out)["patient"] == "MRN-1001"


def test_identical_input_gives_byte_identical_output(tmp_path: Path) -> None:
    facts = month_facts()
    reordered = dict(reversed(list(facts.items())))  # same facts, keys in another order
    first = run(str(write(tmp_path, [facts, facts], "a.json")))[1]
    second = run(str(write(tmp_path, [reordered, facts], "b.json")))[1]
    assert first == second
    process = run_module(["-"], tmp_path, stdin=json.dumps([facts, facts]).encode())
    assert process.stdout == first.encode("utf-8")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            [
                month_facts(),
                month_facts(),
                month_facts(),
                {
                    **month_facts(),
                    "time": [
                        {"id": "a", "date": "2026-11-01", "minutes": 3, "staff": "RN7"},
                        {"id": "b", "date": "2026-11-01", "minutes": 3, "staff": "RN7"},
                        {"id": "c", "date": "2026-11-01", "minutes": -5, "staff": "RN7"},
                    ],
                },
            ],
            "facts[3].time[2].minutes: must be a positive integer, got -5\n",
        ),
        (
            {**month_facts(), "month": "2026-13"},
            'facts.month: must be a month YYYY-MM, got "2026-13"\n',
        ),
        (
            {**month_facts(), "program": "tcm"},
            'facts.program: must be one of ccm, pcm, apcm, got "tcm"\n',
        ),
        (
            {k: v for k, v in month_facts().items() if k != "billing_practitioner"},
            "facts.billing_practitioner: is required\n",
        ),
        ([month_facts(), 7], "facts[1]: must be an object, got 7\n"),
        (42, "facts: must be an object or an array of objects\n"),
        (
            {**month_facts(month="2019-05"), "time": []},
            "facts.month: no rule set covers 2019-05 (rule sets: cms-2024, cms-2025, cms-2026)\n",
        ),
    ],
)
def test_invalid_input_exits_2_with_the_path_and_nothing_on_stdout(
    tmp_path: Path, document: Any, message: str
) -> None:
    assert run(str(write(tmp_path, document))) == (2, "", message)


def test_invalid_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "month": "2026-11",\n  "patient" {}\n}\n', encoding="utf-8")
    assert run(str(path)) == (2, "", f"{path}:3:13: invalid JSON: Expecting ':' delimiter\n")


def test_invalid_json_on_stdin() -> None:
    assert run("-", stdin="") == (2, "", "<stdin>:1:1: invalid JSON: Expecting value\n")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert run(str(missing)) == (2, "", f"{missing}: cannot read: No such file or directory\n")
    code, out, err = run(str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith(f"{tmp_path}: cannot read: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"patient": "\xe9"}')
    assert run(str(path)) == (2, "", f"{path}: not UTF-8 text (byte 13)\n")


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(month_facts()).encode())
    assert run(str(path))[0] == 0


def test_module_entry_point_exit_codes(tmp_path: Path) -> None:
    good = run_module([str(write(tmp_path, month_facts()))], tmp_path)
    assert (good.returncode, good.stderr) == (0, b"")
    assert json.loads(good.stdout)["billable"] is True
    bad = run_module(
        [str(write(tmp_path, {**month_facts(), "complex_mdm": "yes"}, "bad.json"))], tmp_path
    )
    assert (bad.returncode, bad.stdout) == (2, b"")
    assert bad.stderr == b'facts.complex_mdm: must be true or false, got "yes"\n'
    usage = run_module([], tmp_path)
    assert usage.returncode == 2 and b"usage" in usage.stderr
