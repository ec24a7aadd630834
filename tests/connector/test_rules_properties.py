"""Properties every decision holds, over generated patient-months (hypothesis)."""

from __future__ import annotations

import calendar
import copy
import json
from datetime import date, timedelta
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ccm_connector.facts import CARE_PLAN_ELEMENTS, Decision, Facts, facts_from_json
from ccm_connector.rules import RuleSet, decide, exclusion_reasons, rule_set_for

BILLER = "1234567893"
OTHER = "1245319599"
STAFF = {
    "RN-OK": {"role": "clinical", "location": "US", "supervisor": BILLER},
    "RN-PR": {"role": "clinical", "location": "PR", "supervisor": BILLER},
    "RN-OTHER": {"role": "clinical", "location": "US", "supervisor": OTHER},
    "RN-NOSUP": {"role": "clinical", "location": "US"},
    "RN-IN": {"role": "clinical", "location": "IN", "supervisor": BILLER},
    "RN-X": {"role": "clinical", "location": "US", "supervisor": BILLER, "excluded": True},
    "DR-OK": {"role": "practitioner", "location": "US", "npi": BILLER},
    "DR-OTHER": {"role": "practitioner", "location": "US", "npi": OTHER},
    "SCH": {"role": "non_clinical", "location": "US"},
}
# Mostly countable performers, so that thresholds are often reached.
PERFORMERS = ["RN-OK"] * 4 + ["DR-OK"] * 3 + list(STAFF) + ["GHOST"]
MONTHS = ["2024-03", "2024-12", "2025-02", "2025-07", "2025-11", "2026-01", "2026-06", "2026-12"]
OTHER_CODES = [
    "99490",
    "99487",
    "99491",
    "99424",
    "99426",
    "G0181",
    "G0182",
    "90960",
    "G0557",
    "99495",
    "99484",
    "G0511",
    "99213",
]


def iso(day: date) -> str:
    return day.isoformat()


@st.composite
def days(draw: st.DrawFn, first: date, last: date, spill: int = 0) -> date:
    """A day of the month, or up to `spill` days either side."""
    span = (last - first).days
    return first + timedelta(days=draw(st.integers(-spill, span + spill)))


@st.composite
def facts_json(draw: st.DrawFn) -> dict[str, Any]:
    """A patient-month. About half are "clean" (eligible, countable performers, nothing else
    billed), so the line properties see many billable months; the rest vary everything."""
    clean = draw(st.booleans())

    def pick(good: Any, strategy: st.SearchStrategy[Any]) -> Any:
        return good if clean else draw(strategy)

    month = draw(st.sampled_from(MONTHS))
    year, mon = int(month[:4]), int(month[5:])
    first, last = date(year, mon, 1), date(year, mon, calendar.monthrange(year, mon)[1])
    consent_day = pick(
        first - timedelta(days=100),
        st.sampled_from([first - timedelta(days=100), first + timedelta(days=9)]),
    )
    visit = {
        "date": iso(consent_day),
        "code": "99214",
        "practitioner": BILLER,
        "ccm_discussed": True,
    }
    plan = {
        "date": iso(consent_day),
        "shared_with_patient": iso(consent_day),
        "elements": list(CARE_PLAN_ELEMENTS),
    }
    time = [
        {
            "id": f"e{i}",
            "date": iso(draw(days(first, last, spill=pick(0, st.sampled_from([0, 5]))))),
            "minutes": draw(st.integers(1, 70)),
            "staff": draw(st.sampled_from(["RN-OK", "DR-OK"]))
            if clean
            else draw(st.sampled_from(PERFORMERS)),
            "counted_for": pick(None, st.sampled_from([None, None, "tcm", "bhi"])),
        }
        for i in range(draw(st.integers(0, 8)))
    ]
    stays = []
    if not clean and draw(st.booleans()):
        start = draw(days(first, last))
        stays.append(
            {"from": iso(start), "to": iso(start + timedelta(days=draw(st.integers(0, 6))))}
        )
    services = pick([], st.lists(st.sampled_from(OTHER_CODES), max_size=2))
    return {
        "patient": {
            "id": "MRN-P",
            "chronic_conditions": pick(
                ["E11.9", "I10"], st.sampled_from([["E11.9", "I10", "N18.3"], ["I10"], []])
            ),
            "qmb": draw(st.booleans()),
            "last_visit_before_consent": pick(
                iso(consent_day - timedelta(days=60)), st.sampled_from([None, "2019-01-01"])
            ),
            "died_on": pick(None, st.one_of(st.none(), days(first, last).map(iso))),
        },
        "month": month,
        "program": draw(st.sampled_from(["ccm", "pcm", "apcm"])),
        "setting": draw(st.sampled_from(["physician", "fqhc", "rhc"])),
        "billing_practitioner": BILLER,
        "complex_mdm": draw(st.booleans()),
        "consent": pick(
            {"date": iso(consent_day), "practitioner": BILLER},
            st.sampled_from([None, {"date": iso(consent_day), "practitioner": OTHER}]),
        ),
        "initiating_visit": pick(visit, st.sampled_from([None, visit, {**visit, "code": "99211"}])),
        "care_plan": pick(
            plan, st.sampled_from([None, plan, {"date": iso(first - timedelta(days=900))}])
        ),
        "staff": STAFF,
        "time": time,
        "inpatient_stays": stays,
        "other_services": [
            {
                "code": code,
                "practitioner": draw(st.sampled_from([BILLER, OTHER])),
                "date": iso(draw(days(first, last))),
            }
            for code in services
        ],
        "policy": {
            "practitioner_time": draw(st.sampled_from(["pool", "physician_codes", "maximize"])),
            "date_of_service": draw(st.sampled_from(["month_end", "threshold_met"])),
        },
    }


def decided(obj: dict[str, Any]) -> tuple[Facts, RuleSet, Decision]:
    facts = facts_from_json(obj)
    rule_set = rule_set_for(facts.month)
    return facts, rule_set, decide(facts, rule_set)


def units(decision: Decision) -> int:
    return sum(line.units for line in decision.lines)


def route_minutes(facts: Facts, rule_set: RuleSet, route: str) -> int:
    """Countable minutes of a route, recomputed from the exclusion rules."""
    return sum(
        e.minutes
        for e in facts.time
        if not exclusion_reasons(e, facts, rule_set, facts.first_day, facts.last_day)
        and (route == "pool" or facts.staff[e.staff].role == "practitioner")
    )


@settings(max_examples=400, deadline=None)
@given(facts_json())
def test_minutes_are_accounted_for_and_every_exclusion_is_named(obj: dict[str, Any]) -> None:
    facts, _, decision = decided(obj)
    minutes = {e.id: e.minutes for e in facts.time}
    assert decision.countable_minutes + decision.excluded_minutes == sum(minutes.values())
    excludes = [f for f in decision.findings if f.severity == "exclude"]
    assert all(f.entry in minutes and f.minutes == minutes[f.entry] for f in excludes)
    assert sum(minutes[entry] for entry in {f.entry for f in excludes}) == decision.excluded_minutes


@settings(max_examples=400, deadline=None)
@given(facts_json())
def test_billable_exactly_when_no_block(obj: dict[str, Any]) -> None:
    _, _, decision = decided(obj)
    blocked = any(f.severity == "block" for f in decision.findings)
    assert decision.billable is not blocked
    assert bool(decision.lines) is decision.billable


@settings(max_examples=400, deadline=None)
@given(facts_json())
def test_lines_are_well_formed(obj: dict[str, Any]) -> None:
    """One base code; no code under its threshold; no add-on without its base; caps held."""
    facts, rule_set, decision = decided(obj)
    program = rule_set.programs.get(facts.program)
    codes = [line.code for line in decision.lines]
    assert len(codes) == len(set(codes))
    if program is None:
        assert not codes
        return
    families = program.families[facts.setting]
    bases = {f.base: f for f in families} | {level.code: None for level in program.levels}
    add_ons = {f.add_on: f for f in families if f.add_on}
    assert sum(code in bases for code in codes) == (1 if codes else 0)
    for line in decision.lines:
        assert line.code in bases or line.code in add_ons
        family = bases.get(line.code) or add_ons.get(line.code)
        if family is None:  # APCM level: one unit
            assert line.units == 1
            continue
        minutes = route_minutes(facts, rule_set, family.route)
        if line.code == family.base:
            assert line.units == 1 and minutes >= family.threshold
        else:
            assert family.base in codes
            assert 1 <= line.units <= family.cap
            assert minutes >= family.threshold + line.units * family.increment
        if line.code == "99439":
            assert line.units <= 2


@settings(max_examples=400, deadline=None)
@given(facts_json(), st.integers(1, 60), st.data())
def test_more_countable_minutes_never_bill_fewer_units(
    obj: dict[str, Any], extra: int, data: st.DataObject
) -> None:
    facts, _, before = decided(obj)
    usable = [
        day
        for day in (
            facts.first_day + timedelta(days=n)
            for n in range((facts.last_day - facts.first_day).days + 1)
        )
        if (facts.consent is None or day >= facts.consent.date)
        and (facts.patient.died_on is None or day <= facts.patient.died_on)
        and not any(stay.start <= day <= stay.end for stay in facts.inpatient_stays)
    ]
    assume(usable)
    more = copy.deepcopy(obj)
    performer = data.draw(st.sampled_from(["RN-OK", "DR-OK"]))
    day = data.draw(st.sampled_from(usable))
    more["time"].append({"id": "extra", "date": iso(day), "minutes": extra, "staff": performer})
    _, _, after = decided(more)
    assert after.countable_minutes == before.countable_minutes + extra
    # Two designed exceptions, both switching code family:
    # - complex MDM attested and 60 minutes reached: 99487 (one unit, paid more) replaces
    #   99490 + 99439 (two units): T7 against T11;
    # - policy physician_codes and the practitioner's minutes reach 30: 99491/99424 bill from
    #   the practitioner's minutes alone, "leaving staff minutes unbilled" (rules-check.md, T16).
    # Within one family, and in every other case, units never go down.
    crossed_complex = (
        facts.program == "ccm"
        and facts.complex_mdm
        and before.countable_minutes < 60 <= after.countable_minutes
    )
    practitioner_bases = {"99491", "99424"}
    switched_to_practitioner = (
        facts.policy.practitioner_time == "physician_codes"
        and not practitioner_bases & {line.code for line in before.lines}
        and practitioner_bases & {line.code for line in after.lines}
    )
    same_family = before.lines and after.lines and before.lines[0].code == after.lines[0].code
    if same_family or not (crossed_complex or switched_to_practitioner):
        assert units(after) >= units(before), (before.to_json(), after.to_json())


@settings(max_examples=100, deadline=None)
@given(facts_json())
def test_decisions_are_deterministic(obj: dict[str, Any]) -> None:
    _, _, first = decided(obj)
    _, _, second = decided(json.loads(json.dumps(obj)))
    assert json.dumps(first.to_json()) == json.dumps(second.to_json())
