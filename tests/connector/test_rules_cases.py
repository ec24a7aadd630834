"""The test cases of spec/cms-rules.md §7, table-driven; each id names its case number (T1..T59).

Defaults as in §7: a physician practice, DOS in 2025 unless stated, two chronic conditions,
consent before the month, the initiating-visit requirement met, a complete care plan shared
with the patient, US clinical staff supervised by the billing practitioner, nothing else billed.
"CS" = clinical-staff minutes, "MD" = the billing practitioner's own minutes.

Not expressible through the facts interface (the engine decides codes; it is not given
proposed codes to accept or reject):
- T43 (FQHC G0512 in 2026): collaborative care is not a program of this engine.
- T47 (99439 submitted without 99490): held by the property test "no add-on without its base".
- T58 (G0570 without APCM): the engine does not bill the 2026 APCM add-ons yet.
T24 and T59 are Low confidence; they pin the UNCONFIRMED defaults (review flag, not reject).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest

from ccm_connector.facts import CARE_PLAN_ELEMENTS, Decision, facts_from_json
from ccm_connector.rules import (
    RuleSetError,
    RuleSetNotFound,
    decide,
    rule_set_for,
    rule_set_from_toml,
    rule_sets,
)

BILLER = "1234567893"
OTHER = "1245319599"  # another practitioner

STAFF = {
    "RN7": {"role": "clinical", "location": "US", "supervisor": BILLER, "excluded": False},
    "DR1": {"role": "practitioner", "npi": BILLER, "location": "US"},
    "DR2": {"role": "practitioner", "npi": OTHER, "location": "US"},
    "SCH2": {"role": "non_clinical", "location": "US"},
    "RN-PH": {"role": "clinical", "location": "PH", "supervisor": BILLER},
    "RN-OTHER": {"role": "clinical", "location": "US", "supervisor": OTHER},
    "RN-X": {"role": "clinical", "location": "US", "supervisor": BILLER, "excluded": True},
    # T55: a 1099 contractor nurse is auxiliary personnel like an employee (42 CFR 410.26).
    "RN-CONTRACT": {"role": "clinical", "location": "US", "supervisor": BILLER},
    "RN-GU": {"role": "clinical", "location": "GU", "supervisor": BILLER},
}


def shifted(month: str, months: int) -> str:
    year, month0 = divmod(int(month[:4]) * 12 + int(month[5:]) - 1 + months, 12)
    return f"{year:04d}-{month0 + 1:02d}"


def cs(
    minutes: int, day: int = 3, staff: str = "RN7", counted_for: str | None = None
) -> dict[str, Any]:
    """A time entry dated `day` of the service month (or a full date string)."""
    return {"minutes": minutes, "staff": staff, "day": day, "counted_for": counted_for}


def md(minutes: int, day: int = 3) -> dict[str, Any]:
    return cs(minutes, day, staff="DR1")


def svc(code: str, practitioner: str = BILLER, day: int = 20) -> dict[str, Any]:
    return {"code": code, "practitioner": practitioner, "day": day}


def _dated(item: dict[str, Any], month: str) -> dict[str, Any]:
    item = dict(item)
    day = item.pop("day")
    item["date"] = day if isinstance(day, str) else f"{month}-{day:02d}"
    return item


def facts(
    *time: dict[str, Any],
    month: str = "2025-11",
    patient: dict[str, Any] | None = None,
    services: tuple[dict[str, Any], ...] = (),
    **top: Any,
) -> dict[str, Any]:
    """§7 default facts for `month`, with `time` entries, `services` and top-level overrides."""
    consent_day = f"{shifted(month, -8)}-01"
    obj: dict[str, Any] = {
        "patient": {
            "id": "MRN-1001",
            "chronic_conditions": ["E11.9", "I10"],
            "qmb": False,
            "last_visit_before_consent": f"{shifted(month, -9)}-10",
            "died_on": None,
        },
        "month": month,
        "billing_practitioner": BILLER,
        "consent": {"date": consent_day, "practitioner": BILLER},
        "initiating_visit": {
            "date": f"{shifted(month, -9)}-10",
            "code": "99214",
            "practitioner": BILLER,
            "ccm_discussed": True,
        },
        "care_plan": {
            "date": consent_day,
            "reviewed": f"{shifted(month, -1)}-15",
            "shared_with_patient": f"{shifted(month, -8)}-02",
            "elements": list(CARE_PLAN_ELEMENTS),
        },
        "staff": STAFF,
        "time": [dict(_dated(entry, month), id=f"e{i}") for i, entry in enumerate(time, 1)],
        "other_services": [_dated(s, month) for s in services],
    }
    obj["patient"].update(patient or {})
    obj.update(top)
    return obj


def physician_codes(**policy: str) -> dict[str, str]:
    return {"practitioner_time": "physician_codes", **policy}


@dataclass
class Case:
    id: str
    facts: dict[str, Any]
    lines: list[tuple[str, int]]  # (code, units); empty = not billable
    present: set[str] = field(default_factory=set)  # finding codes that must appear
    absent: set[str] = field(default_factory=set)  # finding codes that must not appear
    countable: int | None = None
    excluded: int | None = None


NO_VISIT_NEEDED_BUT_NONE = {"last_visit_before_consent": None}

CASES = [
    # --- thresholds and full increments (§4.3) ---
    Case("T1", facts(cs(19)), [], {"BELOW_THRESHOLD"}, countable=19),
    Case("T2", facts(cs(20)), [("99490", 1)], absent={"UNBILLED_MINUTES"}),
    Case("T3", facts(cs(39)), [("99490", 1)], absent={"UNBILLED_MINUTES"}),
    Case("T4", facts(cs(40)), [("99490", 1), ("99439", 1)]),
    Case("T4-split", facts(cs(25, day=2), cs(15, day=9)), [("99490", 1), ("99439", 1)]),
    Case("T5", facts(cs(60)), [("99490", 1), ("99439", 2)], absent={"UNBILLED_MINUTES"}),
    Case("T6", facts(cs(95)), [("99490", 1), ("99439", 2)], {"UNBILLED_MINUTES"}),
    Case("T7", facts(cs(65), complex_mdm=True), [("99487", 1)], absent={"COMPLEX_BELOW_60"}),
    Case("T8", facts(cs(89), complex_mdm=True), [("99487", 1)]),
    Case("T9", facts(cs(90), complex_mdm=True), [("99487", 1), ("99489", 1)]),
    Case("T10", facts(cs(150), complex_mdm=True), [("99487", 1), ("99489", 3)]),
    Case(
        "T11", facts(cs(55), complex_mdm=True), [("99490", 1), ("99439", 1)], {"COMPLEX_BELOW_60"}
    ),
    # --- the billing practitioner's own time ---
    Case("T12", facts(md(30), policy=physician_codes()), [("99491", 1)]),
    Case("T12-maximize", facts(md(30), policy={"practitioner_time": "maximize"}), [("99491", 1)]),
    Case("T12-pool", facts(md(30), policy={"practitioner_time": "pool"}), [("99490", 1)]),
    Case("T13", facts(md(59), policy=physician_codes()), [("99491", 1)]),
    Case("T14", facts(md(60), policy=physician_codes()), [("99491", 1), ("99437", 1)]),
    Case("T15", facts(md(25), policy=physician_codes()), [("99490", 1)]),
    Case("T15-maximize", facts(md(25)), [("99490", 1)]),
    # T16: 2025 fees: 99490 + 99439 = $106.42 beats 99491 = $82.16; the default is maximize.
    Case("T16", facts(md(30), cs(25)), [("99490", 1), ("99439", 1)], absent={"UNBILLED_MINUTES"}),
    Case(
        "T16-pool",
        facts(md(30), cs(25), policy={"practitioner_time": "pool"}),
        [("99490", 1), ("99439", 1)],
    ),
    Case(
        "T16-physician_codes",
        facts(md(30), cs(25), policy=physician_codes()),
        [("99491", 1)],
        {"UNBILLED_MINUTES"},
        countable=55,
    ),
    # --- one claim per month, exclusivity (§2) ---
    Case("T17", facts(cs(25), services=(svc("99490", OTHER),)), [], {"ALREADY_BILLED"}),
    Case("T18", facts(cs(25), services=(svc("99426"),)), [], {"EXCLUSIVE_SERVICE"}),
    Case(
        "T18-pcm", facts(cs(35), program="pcm", services=(svc("99490"),)), [], {"EXCLUSIVE_SERVICE"}
    ),
    Case(
        "T19-specialist-pcm",
        facts(md(35), program="pcm", services=(svc("99490", OTHER),)),
        [("99424", 1)],
        absent={"OTHER_PRACTITIONER_SERVICE"},
    ),
    Case(
        "T19-pcp-ccm",
        facts(cs(25), services=(svc("99424", OTHER),)),
        [("99490", 1)],
        absent={"OTHER_PRACTITIONER_SERVICE"},
    ),
    Case(
        "T20",
        facts(cs(30, day=4), cs(15, day=6, counted_for="tcm"), services=(svc("99495", day=6),)),
        [("99490", 1)],
        {"TCM_SAME_MONTH", "COUNTED_ELSEWHERE"},
        countable=30,
        excluded=15,
    ),
    Case("T21", facts(cs(25), services=(svc("G0181"),)), [], {"EXCLUSIVE_SERVICE"}),
    Case("T22", facts(cs(25), services=(svc("G0182"),)), [], {"EXCLUSIVE_SERVICE"}),
    Case("T23", facts(cs(25), services=(svc("90960"),)), [], {"EXCLUSIVE_SERVICE"}),
    Case(
        "T24",
        facts(cs(25), services=(svc("90960", OTHER),)),
        [("99490", 1)],
        {"OTHER_PRACTITIONER_SERVICE"},
    ),
    Case("T25", facts(cs(30), services=(svc("G0557"),)), [], {"EXCLUSIVE_SERVICE"}),
    Case(
        "T25-apcm",
        facts(cs(30), program="apcm", services=(svc("99490"),)),
        [],
        {"EXCLUSIVE_SERVICE"},
    ),
    # --- consent and initiating visit (§3.2, §3.3) ---
    Case("T26", facts(cs(25), consent=None), [], {"NO_CONSENT"}),
    Case(
        "T27",
        facts(
            cs(10, day=5),
            cs(15, day=20),
            consent={"date": "2025-11-15", "practitioner": BILLER},
            patient={"last_visit_before_consent": "2025-06-01"},
        ),
        [],
        {"BELOW_THRESHOLD", "BEFORE_CONSENT"},
        countable=15,
        excluded=10,
    ),
    Case(
        "T28",
        facts(cs(25), patient=NO_VISIT_NEEDED_BUT_NONE, initiating_visit=None),
        [],
        {"NO_INITIATING_VISIT"},
    ),
    Case(
        "T29",
        facts(cs(25), patient={"last_visit_before_consent": "2024-01-01"}, initiating_visit=None),
        [],
        {"NO_INITIATING_VISIT"},
    ),
    Case(
        "T30",
        facts(cs(25), patient={"last_visit_before_consent": "2024-07-01"}, initiating_visit=None),
        [("99490", 1)],
    ),
    Case(
        "T31",
        facts(
            cs(25),
            patient=NO_VISIT_NEEDED_BUT_NONE,
            initiating_visit={
                "date": "2025-02-20",
                "code": "99211",
                "practitioner": BILLER,
                "ccm_discussed": True,
            },
        ),
        [],
        {"NO_INITIATING_VISIT"},
    ),
    Case(
        "T32",
        facts(
            cs(25),
            patient=NO_VISIT_NEEDED_BUT_NONE,
            initiating_visit={
                "date": "2025-02-20",
                "code": "G0439",
                "practitioner": BILLER,
                "ccm_discussed": False,
            },
        ),
        [],
        {"NO_INITIATING_VISIT"},
    ),
    Case(
        "T32-discussed",
        facts(
            cs(25),
            patient=NO_VISIT_NEEDED_BUT_NONE,
            initiating_visit={
                "date": "2025-02-20",
                "code": "G0439",
                "practitioner": BILLER,
                "ccm_discussed": True,
            },
        ),
        [("99490", 1)],
    ),
    # --- who and where (§4.2, §4.5-§4.7) ---
    Case(
        "T33",
        facts(cs(25, staff="RN-PH")),
        [],
        {"OFFSHORE_PERFORMER", "BELOW_THRESHOLD"},
        countable=0,
        excluded=25,
    ),
    Case(
        "T34",
        facts(cs(15), cs(20, staff="RN-PH")),
        [],
        {"OFFSHORE_PERFORMER", "BELOW_THRESHOLD"},
        countable=15,
        excluded=20,
    ),
    Case(
        "T35",
        facts(cs(25, staff="SCH2")),
        [],
        {"NON_CLINICAL_PERFORMER", "BELOW_THRESHOLD"},
        countable=0,
    ),
    Case(
        "T36",
        facts(
            cs(10, day=7),
            cs(22, day=20),
            inpatient_stays=[{"from": "2025-11-05", "to": "2025-11-12"}],
        ),
        [("99490", 1)],
        {"DURING_INPATIENT_STAY"},
        countable=22,
        excluded=10,
    ),
    Case(
        "T37-ccm",
        facts(cs(30), patient={"chronic_conditions": ["I10"]}),
        [],
        {"TOO_FEW_CONDITIONS"},
    ),
    Case(
        "T37-pcm",
        facts(cs(30), program="pcm", patient={"chronic_conditions": ["I10"]}),
        [("99426", 1)],
    ),
    Case(
        "T37-apcm",
        facts(cs(30), program="apcm", patient={"chronic_conditions": ["I10"]}),
        [("G0556", 1)],
    ),
    Case("T38", facts(cs(60), program="pcm"), [("99426", 1), ("99427", 1)]),
    Case(
        "T39-january",
        facts(cs(12, day="2025-01-20"), cs(10, day="2025-02-10"), month="2025-01"),
        [],
        {"BELOW_THRESHOLD", "OUTSIDE_MONTH"},
        countable=12,
    ),
    Case(
        "T39-february",
        facts(cs(12, day="2025-01-20"), cs(10, day="2025-02-10"), month="2025-02"),
        [],
        {"BELOW_THRESHOLD", "OUTSIDE_MONTH"},
        countable=10,
    ),
    # --- FQHC/RHC code sets (§5) ---
    Case("T41", facts(cs(25), month="2026-01", setting="rhc"), [("99490", 1)]),
    Case(
        "T41-g0511-elsewhere",
        facts(cs(25), month="2026-01", setting="rhc", services=(svc("G0511", OTHER),)),
        [("99490", 1)],
        absent={"ALREADY_BILLED"},
    ),
    Case(
        "T42",
        facts(cs(25), month="2025-05", setting="rhc", services=(svc("G0511", OTHER),)),
        [],
        {"ALREADY_BILLED"},
    ),
    Case("T42-before-2025", facts(cs(25), month="2024-05", setting="rhc"), [("G0511", 1)]),
    Case(
        "T42-before-2025-fqhc-pcm",
        facts(cs(30), month="2024-05", setting="fqhc", program="pcm"),
        [("G0511", 1)],
    ),
    Case(
        "T42-2025-individual-codes",
        facts(cs(45), month="2025-05", setting="fqhc"),
        [("99490", 1), ("99439", 1)],
    ),
    # --- APCM (§1) ---
    Case("T44", facts(cs(10), program="apcm"), [("G0557", 1)]),
    Case("T44-qmb", facts(cs(10), program="apcm", patient={"qmb": True}), [("G0558", 1)]),
    Case(
        "T45",
        facts(cs(10), program="apcm", patient={"chronic_conditions": ["I10"], "qmb": True}),
        [("G0556", 1)],
    ),
    Case(
        "T46",
        facts(
            cs(10),
            program="apcm",
            patient={"last_visit_before_consent": "2021-01-15"},
            initiating_visit=None,
        ),
        [],
        {"NO_INITIATING_VISIT"},
    ),
    Case(
        "T46-within-3-years",
        facts(
            cs(10),
            program="apcm",
            patient={"last_visit_before_consent": "2022-09-15"},
            initiating_visit=None,
        ),
        [("G0557", 1)],
    ),
    # --- caps and duplicates (§6 A1-A5) ---
    Case("T48", facts(cs(80)), [("99490", 1), ("99439", 2)], {"UNBILLED_MINUTES"}),
    Case("T49", facts(cs(65), complex_mdm=True, services=(svc("99490"),)), [], {"ALREADY_BILLED"}),
    Case("T50", facts(cs(25), services=(svc("99490"),)), [], {"ALREADY_BILLED"}),
    # --- distinct minutes for other services (C12, C13) ---
    Case(
        "T51",
        facts(cs(20, day=4), cs(20, day=5, counted_for="bhi"), services=(svc("99484"),)),
        [("99490", 1)],
        {"COUNTED_ELSEWHERE"},
        countable=20,
        excluded=20,
    ),
    Case(
        "T52",
        facts(cs(20, counted_for="bhi")),
        [],
        {"COUNTED_ELSEWHERE", "BELOW_THRESHOLD"},
        countable=0,
    ),
    Case(
        "T53",
        facts(cs(20, day=4), cs(20, day=5, counted_for="rpm"), services=(svc("99457"),)),
        [("99490", 1)],
        countable=20,
    ),
    Case(
        "T54", facts(cs(25, staff="RN-OTHER")), [], {"NOT_SUPERVISED_BY_BILLER", "BELOW_THRESHOLD"}
    ),
    Case("T55", facts(cs(25, staff="RN-CONTRACT")), [("99490", 1)]),
    Case(
        "T56", facts(cs(25, staff="RN-X")), [], {"EXCLUDED_STAFF", "BELOW_THRESHOLD"}, countable=0
    ),
    Case(
        "T57",
        facts(cs(10), month="2026-03", program="apcm", services=(svc("G0570"),)),
        [("G0557", 1)],
    ),
    Case(
        "T59",
        facts(cs(22, day=5), cs(5, day=15), patient={"died_on": "2025-11-10"}),
        [("99490", 1)],
        {"PATIENT_DECEASED", "AFTER_DEATH"},
        countable=22,
        excluded=5,
    ),
]

# Findings.md rules-engine codes that no §7 case exercises, and checks of our own choices.
EXTRA = [
    Case("territory-counts", facts(cs(25, staff="RN-GU")), [("99490", 1)]),
    Case("unknown-staff", facts(cs(25, staff="NOBODY")), [], {"UNKNOWN_STAFF", "BELOW_THRESHOLD"}),
    Case("other-practitioner-time", facts(cs(25, staff="DR2")), [], {"NOT_SUPERVISED_BY_BILLER"}),
    Case(
        "consent-other-practitioner",
        facts(cs(25), consent={"date": "2025-03-01", "practitioner": OTHER}),
        [],
        {"CONSENT_OTHER_PRACTITIONER"},
    ),
    Case(
        "consent-after-month",
        facts(cs(25), consent={"date": "2025-12-01", "practitioner": BILLER}),
        [],
        {"NO_CONSENT", "BEFORE_CONSENT"},
    ),
    Case("no-care-plan", facts(cs(25), care_plan=None), [], {"NO_CARE_PLAN"}),
    Case(
        "care-plan-warnings",
        facts(
            cs(25),
            care_plan={
                "date": "2024-06-01",
                "reviewed": "2024-10-01",
                "elements": ["problems", "goals"],
            },
        ),
        [("99490", 1)],
        {"CARE_PLAN_NOT_SHARED", "CARE_PLAN_STALE", "CARE_PLAN_INCOMPLETE"},
    ),
    Case(
        "care-plan-reviewed-within-12-months",
        facts(
            cs(25),
            care_plan={
                "date": "2024-06-01",
                "reviewed": "2024-11-30",
                "shared_with_patient": "2024-06-02",
            },
        ),
        [("99490", 1)],
        absent={"CARE_PLAN_STALE", "CARE_PLAN_NOT_SHARED"},
    ),
    Case(
        "apcm-not-in-effect-2024",
        facts(cs(25), month="2024-06", program="apcm"),
        [],
        {"NOT_IN_EFFECT"},
    ),
    # UNCONFIRMED (§4.8): APCM only after a furnished service; here none was logged.
    Case("apcm-no-activity", facts(program="apcm"), [], {"BELOW_THRESHOLD"}),
    Case(
        "99491-cap",
        facts(md(100), policy=physician_codes()),
        [("99491", 1), ("99437", 2)],
        {"UNBILLED_MINUTES"},
    ),
    Case("pcm-practitioner-route", facts(md(65), program="pcm"), [("99424", 1), ("99425", 1)]),
    Case(
        "pcm-pool",
        facts(md(35), program="pcm", policy={"practitioner_time": "pool"}),
        [("99426", 1)],
    ),
    Case(
        "pcm-too-few",
        facts(cs(30), program="pcm", patient={"chronic_conditions": []}),
        [],
        {"TOO_FEW_CONDITIONS"},
    ),
    Case(
        "service-outside-month",
        facts(cs(25), services=(svc("99490", day="2025-10-31"),)),
        [("99490", 1)],
    ),
    Case(
        "apcm-other-practitioner-ccm",
        facts(cs(10), program="apcm", services=(svc("99490", OTHER),)),
        [("G0557", 1)],
        {"OTHER_PRACTITIONER_SERVICE"},
    ),
    Case(
        "apcm-tcm-same-practitioner",
        facts(cs(10), program="apcm", services=(svc("99495"),)),
        [],
        {"EXCLUSIVE_SERVICE"},
    ),
]


def decided(obj: dict[str, Any]) -> Decision:
    return decide(facts_from_json(obj), rule_set_for(obj["month"]))


@pytest.mark.parametrize("case", CASES + EXTRA, ids=lambda case: case.id)
def test_case(case: Case) -> None:
    decision = decided(case.facts)
    codes = {finding.code for finding in decision.findings}
    assert [(line.code, line.units) for line in decision.lines] == case.lines, decision.to_json()
    assert decision.billable is bool(case.lines)
    assert case.present <= codes, decision.to_json()
    assert not case.absent & codes, decision.to_json()
    if case.countable is not None:
        assert decision.countable_minutes == case.countable
    if case.excluded is not None:
        assert decision.excluded_minutes == case.excluded


def test_every_rules_engine_finding_is_exercised() -> None:
    from ccm_connector.facts import SEVERITY

    seen = {code for case in CASES + EXTRA for code in case.present}
    assert seen == set(SEVERITY)


def test_T6_reports_35_unbillable_minutes_and_suggests_complex_ccm() -> None:
    decision = decided(facts(cs(95)))
    [note] = [f for f in decision.findings if f.code == "UNBILLED_MINUTES"]
    assert note.minutes == 35
    assert note.severity == "info"
    assert "consider complex CCM (99487)" in note.message


def test_T16_physician_codes_leaves_staff_minutes_unbilled() -> None:
    decision = decided(facts(md(30), cs(25), policy=physician_codes()))
    [note] = [f for f in decision.findings if f.code == "UNBILLED_MINUTES"]
    assert note.minutes == 25


def test_T27_before_consent_names_the_entry() -> None:
    decision = decided(CASES_BY_ID["T27"].facts)
    [finding] = [f for f in decision.findings if f.severity == "exclude"]
    assert (finding.code, finding.entry, finding.minutes) == ("BEFORE_CONSENT", "e1", 10)


def test_T40_date_of_service_threshold_met() -> None:
    """CS total reaches 20 on the 11th: with threshold_met every line is dated the 11th."""
    entries = (cs(8, day=2), cs(15, day=20), cs(12, day=11))  # not in date order on purpose
    decision = decided(facts(*entries, policy={"date_of_service": "threshold_met"}))
    assert [(line.code, line.date_of_service) for line in decision.lines] == [
        ("99490", date(2025, 11, 11))
    ]


def test_T40_date_of_service_defaults_to_month_end() -> None:
    decision = decided(facts(cs(8, day=2), cs(12, day=11), cs(25, day=20)))
    assert {line.date_of_service for line in decision.lines} == {date(2025, 11, 30)}


def test_threshold_met_on_the_practitioner_route_counts_practitioner_minutes() -> None:
    entries = (cs(40, day=1), md(20, day=5), md(10, day=9))
    decision = decided(facts(*entries, policy=physician_codes(date_of_service="threshold_met")))
    assert [(line.code, line.date_of_service) for line in decision.lines] == [
        ("99491", date(2025, 11, 9))
    ]


def test_apcm_date_of_service_is_month_end_even_with_threshold_met() -> None:
    decision = decided(
        facts(cs(10, day=4), program="apcm", policy={"date_of_service": "threshold_met"})
    )
    assert [line.date_of_service for line in decision.lines] == [date(2025, 11, 30)]


def test_T59_only_warns() -> None:
    decision = decided(CASES_BY_ID["T59"].facts)
    assert [f.severity for f in decision.findings if f.code == "PATIENT_DECEASED"] == ["warn"]


def test_2026_uses_2026_rules_and_names_them() -> None:
    decision = decided(facts(cs(25), month="2026-11"))
    assert decision.rules == "cms-2026"
    assert decided(facts(cs(25), month="2024-11")).rules == "cms-2024"


def test_rule_set_for_picks_the_year_of_the_date_of_service() -> None:
    assert [rule_set_for(m).name for m in ("2024-12", "2025-01", "2025-12", "2026-01")] == [
        "cms-2024",
        "cms-2025",
        "cms-2025",
        "cms-2026",
    ]
    with pytest.raises(RuleSetNotFound):
        rule_set_for("2023-12")


def test_every_packaged_rule_set_prices_its_codes_and_states_sources() -> None:
    for rule_set in rule_sets():
        for code, fee in rule_set.fees.items():
            assert fee.amount > 0 and fee.source, (rule_set.name, code)
    assert all(fee.confirmed for fee in rule_set_for("2025-06").fees.values())
    assert not any(fee.confirmed for fee in rule_set_for("2026-06").fees.values())


def _rules_text(year: int) -> str:
    from importlib import resources

    return (
        resources.files("ccm_connector")
        .joinpath(f"rule_sets/cms-{year}.toml")
        .read_text(encoding="utf-8")
    )


def test_maximize_ties_go_to_pool() -> None:
    text = _rules_text(2025).replace("99491 = { amount = 82.16", "99491 = { amount = 60.49")
    tied = rule_set_from_toml(text)
    decision = decide(facts_from_json(facts(md(30))), tied)
    assert [line.code for line in decision.lines] == ["99490"]


def test_other_practitioner_setting_block_rejects() -> None:
    text = _rules_text(2025).replace(
        'other_practitioner_service = "warn"', 'other_practitioner_service = "block"'
    )
    strict = rule_set_from_toml(text)
    decision = decide(facts_from_json(CASES_BY_ID["T24"].facts), strict)
    assert not decision.billable
    assert "EXCLUSIVE_SERVICE" in {f.code for f in decision.findings}


def test_apcm_activity_setting_zero_bills_without_minutes() -> None:
    text = _rules_text(2025).replace(
        "apcm_min_countable_minutes = 1", "apcm_min_countable_minutes = 0"
    )
    decision = decide(facts_from_json(facts(program="apcm")), rule_set_from_toml(text))
    assert [line.code for line in decision.lines] == ["G0557"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            '99490 = { amount = 60.49, confirmed = true, source = "[S29] PPRRVU2025_Oct x CF 32.3465 (cms-rules.md §1)" }\n',
            "",
            "no fee for 99490",
        ),
        ("cap = 2             # [S35]", "caps = 2             # [S35]", "unknown key caps"),
        (
            '"G0182", "90951-90970", "99424-99427"',
            '"G0182", "90970-90951", "99424-99427"',
            "bad code range",
        ),
        (
            'other_practitioner_service = "warn"',
            'other_practitioner_service = "maybe"',
            "must be warn or block",
        ),
    ],
)
def test_broken_rule_files_are_refused(old: str, new: str, message: str) -> None:
    text = _rules_text(2025)
    assert old in text
    with pytest.raises(RuleSetError, match=message):
        rule_set_from_toml(text.replace(old, new, 1))


CASES_BY_ID = {case.id: case for case in CASES + EXTRA}
