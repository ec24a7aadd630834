"""Building a patient-month's facts from practice records: consent, conditions, visits, plans, stays."""

from __future__ import annotations

import datetime as dt

from ccm_connector.facts import facts_from_json
from ccm_connector.month_facts import (
    PatientRecords,
    Policy,
    care_plan_in_force,
    chronic_conditions,
    consent_in_force,
    initiating_visit,
    month_facts,
    stays_in_month,
)
from ccm_connector.reconcile import CountedTime
from ccm_connector.records import CarePlan, Consent, Problem, Service, Stay
from ccm_connector.roster import Staff
from ccm_connector.rules import rule_set_for

NPI = "1234567893"
VISITS = rule_set_for("2026-11").initiating_visit_codes
D = dt.date.fromisoformat


def consent(day: str, status: str = "given", program: str = "ccm") -> Consent:
    return Consent("P1", program, D(day), NPI, status)


def test_consent_in_force_follows_withdrawal_at_month_end() -> None:
    given = consent("2026-01-05")
    assert consent_in_force([given], "2026-11") == given
    assert consent_in_force([given], "2025-12") is None  # not yet given
    # Withdrawn during November: still covers November (effective at the end of the month)...
    assert consent_in_force([given, consent("2026-11-10", "withdrawn")], "2026-11") == given
    # ...but not December.
    assert consent_in_force([given, consent("2026-11-10", "withdrawn")], "2026-12") is None
    renewed = consent("2026-12-02")
    assert consent_in_force([given, consent("2026-11-10", "withdrawn"), renewed], "2026-12") == renewed


def test_only_active_icd10_chronic_problems_count() -> None:
    problems = [
        Problem("P1", "E11.9", "I10", "active"),
        Problem("P1", "I10", "I10", "active"),
        Problem("P1", "J45.909", "I10", "resolved"),
        Problem("P1", "Z79.4", "I10", "active"),  # a status code, not a condition
        Problem("P1", "R51.9", "I10", "active"),  # a symptom
        Problem("P1", "44054006", "SNOMED", "active"),
    ]
    assert chronic_conditions(problems, rule_set_for("2026-11").non_condition_chapters) == ["E11.9", "I10"]


def test_initiating_visit_prefers_the_billing_practitioner_and_knows_if_ccm_was_discussed() -> None:
    services = (
        Service("P1", D("2025-12-01"), ("99213",), "1987654328"),
        Service("P1", D("2026-01-05"), ("99214", "G0506"), NPI),
    )
    visit = initiating_visit(services, consent("2026-01-05"), NPI, VISITS)
    assert visit == {"date": "2026-01-05", "code": "99214", "practitioner": NPI, "ccm_discussed": True}
    only_211 = (Service("P1", D("2026-01-02"), ("99211",), NPI),)
    assert initiating_visit(only_211, consent("2026-01-05"), NPI, VISITS)["code"] == "99211"


def test_care_plan_and_stays_are_clipped_to_the_month() -> None:
    plans = [CarePlan("P1", D("2026-01-06"), "A", ("goals",), D("2026-01-07")), CarePlan("P1", D("2026-12-01"), "B", ("goals",))]
    assert care_plan_in_force(plans, "2026-11")["date"] == "2026-01-06"
    assert care_plan_in_force(plans, "2025-11") is None
    stays = [Stay("P1", D("2026-10-28"), D("2026-11-03"), "inpatient"), Stay("P1", D("2026-11-25"), None, "snf")]
    assert stays_in_month(stays, "2026-11") == [{"from": "2026-11-01", "to": "2026-11-03"}, {"from": "2026-11-25", "to": "2026-11-30"}]


def test_month_facts_are_valid_rules_input() -> None:
    records = PatientRecords(
        patient=None,
        problems=(Problem("P1", "E11.9", "I10", "active"), Problem("P1", "I10", "I10", "active")),
        services=(Service("P1", D("2026-01-05"), ("99214",), NPI), Service("P1", D("2026-11-20"), ("99495",), NPI)),
        consents=(consent("2026-01-05"),),
        care_plans=(CarePlan("P1", D("2026-01-06"), "A", ("goals",), D("2026-01-07")),),
    )
    roster = {"RN7": Staff("RN7", "", "RN", "clinical", "US", NPI, None, False, False)}
    counted = [CountedTime("E1", "P1", D("2026-11-03"), "RN7", 25, ("TP1",))]
    facts = month_facts("P1", "2026-11", records, counted, roster, Policy(visit_codes=VISITS, non_condition_chapters=rule_set_for("2026-11").non_condition_chapters))
    parsed = facts_from_json(facts)
    assert parsed.billing_practitioner == NPI
    assert facts["time"] == [{"id": "E1", "date": "2026-11-03", "minutes": 25, "staff": "RN7", "counted_for": None}]
    assert facts["staff"]["RN7"]["supervisor"] == NPI
    assert facts["other_services"] == [{"code": "99495", "practitioner": NPI, "date": "2026-11-20"}]
    assert facts["patient"]["last_visit_before_consent"] == "2026-01-05"
