"""The Medicare care-management rules engine: the facts of one patient-month in, a decision out.

Pure: no I/O and no clock inside `decide`; month-close uses it unchanged. The rules are data,
one TOML file per year of date of service in rule_sets/ (thresholds, unit caps, code sets,
exclusive code lists, initiating-visit codes, fees, and the settings for points cms-rules.md
leaves UNCONFIRMED). Adding a year means adding a file. Comments cite spec/cms-rules.md.

How a month is judged:
- Every time entry counts unless excluded; an excluded entry gets one `exclude` finding per
  reason that applies (§4.5), its minutes counted once in `excluded`.
- Eligibility and same-month checks add `block`, `warn` and `info` findings.
- Time programs (CCM, PCM) pick a code family by route: "pool" (clinical staff plus the billing
  practitioner's own time, §4.2) or "practitioner" (the billing practitioner alone: 99491,
  99424), per policy.practitioner_time: `pool`; `physician_codes` (the practitioner route when
  its base threshold is met, else pool, T15); `maximize` (the route paying more by the year's
  fee table, ties to pool, T16). Complex CCM (99487) needs the MDM attestation and 60 pooled
  minutes, else non-complex codes with COMPLEX_BELOW_60 (T11). Add-ons bill full increments
  only, up to their caps (§4.3).
- APCM bills one level code by condition count and QMB status (§1).
- Any `block` finding makes the month not billable and empties `lines`.

Findings are sorted by severity (block, exclude, warn, info), then exclusions by their entry's
position in `facts.time`, then by code in FINDING_ORDER, then by message.
"""

from __future__ import annotations

import calendar
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from .facts import (
    CARE_PLAN_ELEMENTS,
    SETTINGS,
    Decision,
    Facts,
    Finding,
    Line,
    StaffMember,
    TimeEntry,
)

SEVERITY_ORDER = ("block", "exclude", "warn", "info")
FINDING_ORDER = (
    # block, as in findings.md
    "NO_CONSENT",
    "CONSENT_OTHER_PRACTITIONER",
    "NO_INITIATING_VISIT",
    "TOO_FEW_CONDITIONS",
    "NO_CARE_PLAN",
    "BELOW_THRESHOLD",
    "EXCLUSIVE_SERVICE",
    "ALREADY_BILLED",
    "NOT_IN_EFFECT",
    # exclude, in the order exclusion_reasons checks them
    "UNKNOWN_STAFF",
    "OUTSIDE_MONTH",
    "BEFORE_CONSENT",
    "AFTER_DEATH",
    "DURING_INPATIENT_STAY",
    "COUNTED_ELSEWHERE",
    "OFFSHORE_PERFORMER",
    "NON_CLINICAL_PERFORMER",
    "EXCLUDED_STAFF",
    "NOT_SUPERVISED_BY_BILLER",
    # warn and info, as in findings.md
    "COMPLEX_BELOW_60",
    "OTHER_PRACTITIONER_SERVICE",
    "PATIENT_DECEASED",
    "CARE_PLAN_NOT_SHARED",
    "CARE_PLAN_STALE",
    "CARE_PLAN_INCOMPLETE",
    "UNBILLED_MINUTES",
    "TCM_SAME_MONTH",
)
_FINDING_RANK = {code: i for i, code in enumerate(FINDING_ORDER)}
_SEVERITY_RANK = {severity: i for i, severity in enumerate(SEVERITY_ORDER)}
# Findings about the lines themselves; meaningless once the month is blocked.
_LINE_NOTES = frozenset({"COMPLEX_BELOW_60", "UNBILLED_MINUTES"})


class RuleSetError(ValueError):
    """A rule file that is malformed or inconsistent."""


class RuleSetNotFound(LookupError):
    """No rule set covers the month."""


# --- rule data -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fee:
    """A national non-facility amount and where it comes from."""

    amount: Decimal
    source: str
    confirmed: bool


@dataclass(frozen=True, slots=True)
class Family:
    """A base code and its add-on, billed from the countable minutes of one route."""

    base: str
    threshold: int  # minutes the base code needs
    route: str  # "pool" (clinical staff + billing practitioner) | "practitioner" (billing practitioner only)
    complex: bool = False  # needs the billing practitioner's complex-MDM attestation
    add_on: str | None = None
    increment: int = 0  # full minutes per add-on unit (§4.3)
    cap: int = 0  # add-on units per month

    def add_on_units(self, minutes: int) -> int:
        """Full increments beyond the base threshold, up to the cap; no midpoint rounding (§4.3)."""
        if self.add_on is None or minutes < self.threshold:
            return 0
        return min(self.cap, (minutes - self.threshold) // self.increment)

    def capacity(self) -> int | None:
        """Most minutes the family can carry (None when the base code carries any amount)."""
        return None if self.add_on is None else self.threshold + self.cap * self.increment


@dataclass(frozen=True, slots=True)
class Level:
    """An APCM level: its code and what the patient needs for it."""

    code: str
    min_conditions: int
    qmb: bool = False


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    min_conditions: int
    visit_lookback_months: int  # initiating visit needed if not seen within this (§3.2)
    families: dict[str, tuple[Family, ...]]  # by setting; empty for APCM
    levels: tuple[Level, ...]  # APCM, best first; empty for time programs
    base_codes: frozenset[str]  # a claim for any of these is this program's claim for the month
    exclusive_codes: frozenset[str]  # not in the same month by the same practitioner
    other_practitioner_review_codes: frozenset[str]  # by another practitioner: review (C5, C10)


@dataclass(frozen=True, slots=True)
class Settings:
    """The year's choices on points cms-rules.md leaves UNCONFIRMED (see the rule files)."""

    care_plan_stale_months: int
    other_practitioner_service: str  # "warn" | "block"
    apcm_min_countable_minutes: int
    apcm_date_of_service: str  # "month_end" | "first_service"
    apcm_consent_from_ccm: bool  # for whoever builds the facts; the engine judges facts.consent


@dataclass(frozen=True, slots=True)
class RuleSet:
    name: str
    effective_from: date
    effective_to: date
    us_locations: frozenset[str]
    non_condition_chapters: frozenset[str]  # ICD-10-CM chapter letters that are never chronic conditions
    initiating_visit_codes: frozenset[str]
    tcm_codes: frozenset[str]
    settings: Settings
    programs: dict[str, Program]
    fees: dict[str, Fee]

    def fee(self, code: str) -> Fee:
        return self.fees[code]


# --- loading rule files --------------------------------------------------------------------

_RANGE = re.compile(r"([A-Z]*)(\d+)-\1(\d+)")


def _table(
    value: Any, where: str, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RuleSetError(f"{where}: must be a table")
    required, known = set(required), set(required) | set(optional)
    if missing := sorted(required - value.keys()):
        raise RuleSetError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(value.keys() - known):
        raise RuleSetError(f"{where}: unknown key {', '.join(unknown)}")
    return value


def _codes(items: Any, where: str) -> frozenset[str]:
    """Codes from a list that may hold ranges of one prefix ("90951-90970", "G0556-G0558")."""
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise RuleSetError(f"{where}: must be a list of codes")
    codes: set[str] = set()
    for item in items:
        match = _RANGE.fullmatch(item)
        if match is None:
            codes.add(item)
            continue
        prefix, low, high = match[1], match[2], match[3]
        if len(low) != len(high) or int(high) < int(low):
            raise RuleSetError(f"{where}: bad code range {item!r}")
        codes.update(f"{prefix}{n:0{len(low)}d}" for n in range(int(low), int(high) + 1))
    return frozenset(codes)


def _family(value: Any, where: str) -> Family:
    t = _table(
        value, where, ("base", "threshold", "route"), ("complex", "add_on", "increment", "cap")
    )
    family = Family(
        base=t["base"],
        threshold=t["threshold"],
        route=t["route"],
        complex=t.get("complex", False),
        add_on=t.get("add_on"),
        increment=t.get("increment", 0),
        cap=t.get("cap", 0),
    )
    if family.route not in ("pool", "practitioner") or family.threshold < 1:
        raise RuleSetError(f"{where}: route must be pool or practitioner and threshold positive")
    if family.add_on is not None and (family.increment < 1 or family.cap < 1):
        raise RuleSetError(f"{where}: an add-on needs a positive increment and cap")
    return family


def _families(values: Any, where: str) -> tuple[Family, ...]:
    if not isinstance(values, list):
        raise RuleSetError(f"{where}: must be an array of tables")
    families = tuple(_family(v, f"{where}[{i}]") for i, v in enumerate(values))
    # The engine picks one family per kind; more would be ambiguous.
    kinds = [(f.route, f.complex) for f in families]
    if len(set(kinds)) != len(kinds) or ("practitioner", True) in kinds:
        raise RuleSetError(f"{where}: at most one family per route (plus one complex pool family)")
    return families


def _level(value: Any, where: str) -> Level:
    t = _table(value, where, ("code", "min_conditions"), ("qmb",))
    return Level(code=t["code"], min_conditions=t["min_conditions"], qmb=t.get("qmb", False))


def _program(name: str, value: Any, where: str) -> Program:
    t = _table(
        value,
        where,
        (
            "min_conditions",
            "visit_lookback_months",
            "exclusive_codes",
            "other_practitioner_review_codes",
        ),
        ("also_billed_as", "families", "families_by_setting", "levels"),
    )
    default = _families(t.get("families", []), f"{where}.families")
    families = {setting: default for setting in SETTINGS}
    overrides = _table(
        t.get("families_by_setting", {}), f"{where}.families_by_setting", (), SETTINGS
    )
    for setting, values in overrides.items():
        families[setting] = _families(values, f"{where}.families_by_setting.{setting}")
    levels = tuple(_level(v, f"{where}.levels[{i}]") for i, v in enumerate(t.get("levels", [])))
    timed = any(families.values())
    if bool(levels) == timed or (timed and not all(families.values())):
        raise RuleSetError(
            f"{where}: needs families for every setting (time programs) or levels (APCM)"
        )
    if levels and (levels[-1].min_conditions > t["min_conditions"] or levels[-1].qmb):
        raise RuleSetError(f"{where}: the last level must take every eligible patient")
    bases = {f.base for fs in families.values() for f in fs} | {level.code for level in levels}
    return Program(
        name=name,
        min_conditions=t["min_conditions"],
        visit_lookback_months=t["visit_lookback_months"],
        families=families,
        levels=levels,
        base_codes=frozenset(bases)
        | _codes(t.get("also_billed_as", []), f"{where}.also_billed_as"),
        exclusive_codes=_codes(t["exclusive_codes"], f"{where}.exclusive_codes"),
        other_practitioner_review_codes=_codes(
            t["other_practitioner_review_codes"], f"{where}.other_practitioner_review_codes"
        ),
    )


def _settings(value: Any, where: str) -> Settings:
    t = _table(value, where, Settings.__slots__)
    settings = Settings(**t)
    if settings.other_practitioner_service not in ("warn", "block"):
        raise RuleSetError(f"{where}.other_practitioner_service: must be warn or block")
    if settings.apcm_date_of_service not in ("month_end", "first_service"):
        raise RuleSetError(f"{where}.apcm_date_of_service: must be month_end or first_service")
    return settings


def _fee(value: Any, where: str) -> Fee:
    t = _table(value, where, ("amount", "source", "confirmed"))
    return Fee(amount=Decimal(str(t["amount"])), source=t["source"], confirmed=t["confirmed"])


def billable_codes(program: Program) -> set[str]:
    """Every code the engine may bill for the program, in any setting."""
    families = [f for fs in program.families.values() for f in fs]
    return (
        {f.base for f in families}
        | {f.add_on for f in families if f.add_on}
        | {level.code for level in program.levels}
    )


def rule_set_from_toml(text: str, where: str = "rule set") -> RuleSet:
    """A RuleSet from the text of one rule file; RuleSetError if it does not hold together."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuleSetError(f"{where}: {e}") from None
    t = _table(
        data,
        where,
        (
            "name",
            "effective_from",
            "effective_to",
            "us_locations",
            "non_condition_chapters",
            "initiating_visit_codes",
            "tcm_codes",
            "settings",
            "programs",
            "fees",
        ),
    )
    programs = {
        name: _program(name, value, f"{where}: programs.{name}")
        for name, value in _table(
            t["programs"], f"{where}: programs", (), ("ccm", "pcm", "apcm")
        ).items()
    }
    fees = {code: _fee(value, f"{where}: fees.{code}") for code, value in t["fees"].items()}
    billable = {code for program in programs.values() for code in billable_codes(program)}
    if missing := sorted(billable - fees.keys()):
        raise RuleSetError(f"{where}: no fee for {', '.join(missing)}")
    return RuleSet(
        name=t["name"],
        effective_from=t["effective_from"],
        effective_to=t["effective_to"],
        us_locations=frozenset(t["us_locations"]),
        non_condition_chapters=frozenset(t["non_condition_chapters"]),
        initiating_visit_codes=_codes(
            t["initiating_visit_codes"], f"{where}: initiating_visit_codes"
        ),
        tcm_codes=_codes(t["tcm_codes"], f"{where}: tcm_codes"),
        settings=_settings(t["settings"], f"{where}: settings"),
        programs=programs,
        fees=fees,
    )


@cache
def rule_sets() -> tuple[RuleSet, ...]:
    """Every packaged rule set, oldest first (loaded once)."""
    folder = resources.files("ccm_connector").joinpath("rule_sets")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    sets = sorted(
        (rule_set_from_toml(f.read_text(encoding="utf-8"), f.name) for f in files),
        key=lambda r: r.effective_from,
    )
    for earlier, later in zip(sets, sets[1:], strict=False):
        if later.effective_from <= earlier.effective_to:
            raise RuleSetError(f"{earlier.name} and {later.name} overlap")
    return tuple(sets)


def rule_set_for(month: str) -> RuleSet:
    """The rule set in force for dates of service in `month` (YYYY-MM)."""
    day = date(int(month[:4]), int(month[5:7]), 1)
    sets = rule_sets()
    for rule_set in sets:
        if rule_set.effective_from <= day <= rule_set.effective_to:
            return rule_set
    names = ", ".join(r.name for r in sets)
    raise RuleSetNotFound(f"no rule set covers {month} (rule sets: {names})")


# --- the decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One way to bill the month: a family and the countable entries of its route."""

    family: Family
    entries: tuple[TimeEntry, ...]
    minutes: int


@dataclass(frozen=True, slots=True)
class Billing:
    lines: tuple[Line, ...]
    findings: tuple[Finding, ...]  # BELOW_THRESHOLD, or notes on the lines


def decide(facts: Facts, rule_set: RuleSet) -> Decision:
    """The billing decision for one patient-month under `rule_set`."""
    first, last = facts.first_day, facts.last_day
    per_entry = [exclusion_findings(entry, facts, rule_set, first, last) for entry in facts.time]
    countable = tuple(
        entry for entry, found in zip(facts.time, per_entry, strict=True) if not found
    )
    findings = [finding for found in per_entry for finding in found]
    lines: tuple[Line, ...] = ()
    program = rule_set.programs.get(facts.program)
    if program is None:
        findings.append(not_in_effect(facts, rule_set))
    else:
        findings += month_findings(facts, program, rule_set, first, last)
        billing = program_billing(facts, program, countable, rule_set)
        findings += billing.findings
        lines = billing.lines
    billable = not any(f.severity == "block" for f in findings)
    if not billable:
        lines = ()
        findings = [f for f in findings if f.code not in _LINE_NOTES]
    countable_minutes = total_minutes(countable)
    return Decision(
        patient=facts.patient.id,
        month=facts.month,
        program=facts.program,
        billable=billable,
        lines=lines,
        countable_minutes=countable_minutes,
        excluded_minutes=total_minutes(facts.time) - countable_minutes,
        findings=sorted_findings(findings, facts),
        rules=rule_set.name,
    )


def total_minutes(entries: Iterable[TimeEntry]) -> int:
    return sum(entry.minutes for entry in entries)


def sorted_findings(findings: list[Finding], facts: Facts) -> tuple[Finding, ...]:
    position = {entry.id: i for i, entry in reversed(list(enumerate(facts.time)))}
    return tuple(
        sorted(
            findings,
            key=lambda f: (
                _SEVERITY_RANK[f.severity],
                position.get(f.entry, -1),
                _FINDING_RANK[f.code],
                f.message,
            ),
        )
    )


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (clamped to the month's last day)."""
    year, month0 = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month0 + 1, min(day.day, calendar.monthrange(year, month0 + 1)[1]))


# --- time entries (§4.5) ---------------------------------------------------------------------


def exclusion_findings(
    entry: TimeEntry, facts: Facts, rule_set: RuleSet, first: date, last: date
) -> list[Finding]:
    """One `exclude` finding per reason the entry's minutes do not count; empty if they count."""
    return [
        Finding(code, message, entry=entry.id, minutes=entry.minutes)
        for code, message in exclusion_reasons(entry, facts, rule_set, first, last)
    ]


def exclusion_reasons(
    entry: TimeEntry, facts: Facts, rule_set: RuleSet, first: date, last: date
) -> list[tuple[str, str]]:
    staff = facts.staff.get(entry.staff)
    reasons = []
    if staff is None:
        reasons.append(("UNKNOWN_STAFF", f"staff {entry.staff} is not in the roster"))
    if not first <= entry.date <= last:
        # §4.1 [S33]: the service period is the calendar month; no carrying time across months.
        reasons.append(("OUTSIDE_MONTH", f"dated outside the service month {facts.month}"))
    if facts.consent is not None and entry.date < facts.consent.date:
        # §3.3 (Medium): nothing before consent counts.
        reasons.append(("BEFORE_CONSENT", "dated before the consent date"))
    if facts.patient.died_on is not None and entry.date > facts.patient.died_on:
        reasons.append(("AFTER_DEATH", "dated after the patient's death"))
    if any(stay.start <= entry.date <= stay.end for stay in facts.inpatient_stays):
        # §4.5 [S3]: no time while the patient is a hospital or SNF inpatient.
        reasons.append(("DURING_INPATIENT_STAY", "dated within an inpatient or SNF stay"))
    if entry.counted_for is not None:
        # C13: a minute counts toward one time-based service only.
        reasons.append(("COUNTED_ELSEWHERE", f"minutes already counted toward {entry.counted_for}"))
    if staff is not None:
        reasons += staff_reasons(staff, entry.staff, facts, rule_set)
    return reasons


def staff_reasons(
    staff: StaffMember, staff_id: str, facts: Facts, rule_set: RuleSet
) -> list[tuple[str, str]]:
    """Why time by this staff member never counts for this billing practitioner (§4.2, §4.6, §4.7)."""
    reasons = []
    if staff.location not in rule_set.us_locations:
        reasons.append(
            (
                "OFFSHORE_PERFORMER",
                f"performed by {staff_id}, located outside the United States ({staff.location})",
            )
        )
    if staff.role == "non_clinical":
        reasons.append(("NON_CLINICAL_PERFORMER", f"performed by non-clinical staff {staff_id}"))
    if staff.excluded:
        reasons.append(
            ("EXCLUDED_STAFF", f"{staff_id} is excluded by OIG or has revoked enrollment")
        )
    if staff.role == "clinical" and staff.supervisor != facts.billing_practitioner:
        # §4.6 [S15]: only the supervising practitioner may bill incident-to time.
        reasons.append(
            (
                "NOT_SUPERVISED_BY_BILLER",
                f"{staff_id} is not supervised by the billing practitioner",
            )
        )
    if staff.role == "practitioner" and staff.npi != facts.billing_practitioner:
        reasons.append(
            (
                "NOT_SUPERVISED_BY_BILLER",
                f"{staff_id} is a practitioner other than the billing practitioner",
            )
        )
    return reasons


# --- the month's eligibility and same-month rules ---------------------------------------------


def not_in_effect(facts: Facts, rule_set: RuleSet) -> Finding:
    return Finding(
        "NOT_IN_EFFECT",
        f"{facts.program.upper()} does not exist for {facts.month} (rule set {rule_set.name})",
    )


def month_findings(
    facts: Facts, program: Program, rule_set: RuleSet, first: date, last: date
) -> list[Finding]:
    return [
        *consent_findings(facts, last),
        *initiating_visit_findings(facts, program, rule_set, last),
        *condition_findings(facts, program),
        *care_plan_findings(facts, rule_set, last),
        *other_service_findings(facts, program, rule_set, first, last),
        *deceased_findings(facts, first, last),
    ]


def consent_findings(facts: Facts, last: date) -> list[Finding]:
    """§3.3: documented consent by the month's end, to the current billing practitioner."""
    consent = facts.consent
    findings = []
    if consent is None or consent.date > last:
        findings.append(
            Finding("NO_CONSENT", "no documented consent on or before the month's last day")
        )
    if consent is not None and consent.practitioner != facts.billing_practitioner:
        findings.append(
            Finding(
                "CONSENT_OTHER_PRACTITIONER",
                f"consent names practitioner {consent.practitioner}, not the billing practitioner "
                f"{facts.billing_practitioner}; a new consent is needed",
            )
        )
    return findings


def initiating_visit_findings(
    facts: Facts, program: Program, rule_set: RuleSet, last: date
) -> list[Finding]:
    """§3.2: a qualifying visit is needed unless the patient was seen within the lookback before consent."""
    reference = facts.consent.date if facts.consent is not None else last
    window_start = months_before(reference, program.visit_lookback_months)
    seen = facts.patient.last_visit_before_consent
    if seen is not None and seen >= window_start:
        return []
    problem = initiating_visit_problem(facts, rule_set, window_start, last)
    if problem is None:
        return []
    return [
        Finding(
            "NO_INITIATING_VISIT",
            f"an initiating visit is required (not seen by the billing practitioner in the "
            f"{program.visit_lookback_months} months before consent) and {problem}",
        )
    ]


def initiating_visit_problem(
    facts: Facts, rule_set: RuleSet, window_start: date, last: date
) -> str | None:
    """Why the recorded initiating visit does not qualify, or None if it does (§3.2)."""
    visit = facts.initiating_visit
    if visit is None:
        return "none is recorded"
    if visit.code not in rule_set.initiating_visit_codes:
        return f"{visit.code} does not qualify as an initiating visit"
    if visit.practitioner != facts.billing_practitioner:
        return "the visit was not furnished by the billing practitioner"
    if not visit.ccm_discussed:
        return "the program was not discussed and documented at the visit"
    if visit.date > last:
        return "the visit is after the service month"
    if visit.date < window_start:
        return "the visit is itself outside the lookback before consent"
    return None


def condition_findings(facts: Facts, program: Program) -> list[Finding]:
    """§3.1: CCM needs two chronic conditions, PCM one; APCM takes any patient (G0556)."""
    count = len(facts.patient.chronic_conditions)
    if count >= program.min_conditions:
        return []
    return [
        Finding(
            "TOO_FEW_CONDITIONS",
            f"{count} chronic condition(s); {program.name.upper()} needs at least {program.min_conditions}",
        )
    ]


def care_plan_findings(facts: Facts, rule_set: RuleSet, last: date) -> list[Finding]:
    """§3.5: a care plan dated by the month's end; warn if unshared, stale or incomplete."""
    plan = facts.care_plan
    if plan is None or plan.date > last:
        return [Finding("NO_CARE_PLAN", "no care plan dated on or before the month's last day")]
    findings = []
    if plan.shared_with_patient is None or plan.shared_with_patient > last:
        findings.append(
            Finding(
                "CARE_PLAN_NOT_SHARED", "no record that a copy of the care plan went to the patient"
            )
        )
    stale_months = rule_set.settings.care_plan_stale_months
    latest = max(d for d in (plan.date, plan.reviewed) if d is not None and d <= last)
    if latest < months_before(last, stale_months):
        findings.append(
            Finding(
                "CARE_PLAN_STALE",
                f"care plan not reviewed in the {stale_months} months before the month's end",
            )
        )
    if missing := [element for element in CARE_PLAN_ELEMENTS if element not in plan.elements]:
        findings.append(Finding("CARE_PLAN_INCOMPLETE", f"care plan lacks: {', '.join(missing)}"))
    return findings


def other_service_findings(
    facts: Facts, program: Program, rule_set: RuleSet, first: date, last: date
) -> list[Finding]:
    """Same-month rules (§2) for the other services billed in the month."""
    in_month = sorted(
        (s for s in facts.other_services if first <= s.date <= last),
        key=lambda s: (s.date, s.code, s.practitioner),
    )
    return [
        f
        for s in in_month
        if (f := other_service_finding(s.code, s.practitioner, facts, program, rule_set))
    ]


def other_service_finding(
    code: str, practitioner: str, facts: Facts, program: Program, rule_set: RuleSet
) -> Finding | None:
    same = practitioner == facts.billing_practitioner
    by = "the billing practitioner" if same else f"practitioner {practitioner}"
    if code in program.base_codes:
        # C1, C9, C15, A1: one claim per patient-month for the program, whoever billed it.
        return Finding("ALREADY_BILLED", f"{code} already billed this month by {by}")
    if code in program.exclusive_codes and same:
        # C5, C7, C8, A2.
        return Finding(
            "EXCLUSIVE_SERVICE", f"{code} billed this month by {by} excludes {program.name.upper()}"
        )
    if code in program.other_practitioner_review_codes and not same:
        # C5, C10: UNCONFIRMED for another practitioner; the rule year's setting decides.
        if rule_set.settings.other_practitioner_service == "block":
            return Finding(
                "EXCLUSIVE_SERVICE",
                f"{code} billed this month by {by} excludes {program.name.upper()}",
            )
        return Finding("OTHER_PRACTITIONER_SERVICE", f"{code} billed this month by {by}: review")
    if code in rule_set.tcm_codes:
        # C6: allowed since CY2020; minutes counted for TCM are excluded (COUNTED_ELSEWHERE).
        return Finding(
            "TCM_SAME_MONTH",
            f"TCM {code} billed this month by {by}: allowed, no minute may count for both",
        )
    return None


def deceased_findings(facts: Facts, first: date, last: date) -> list[Finding]:
    """T59 (UNCONFIRMED): death during the month is flagged for review, not rejected."""
    died = facts.patient.died_on
    if died is None or not first <= died <= last:
        return []
    return [
        Finding(
            "PATIENT_DECEASED",
            "the patient died during the month; minutes after death are excluded",
        )
    ]


# --- codes -----------------------------------------------------------------------------------


def program_billing(
    facts: Facts, program: Program, countable: tuple[TimeEntry, ...], rule_set: RuleSet
) -> Billing:
    if program.levels:
        return apcm_billing(facts, program, countable, rule_set)
    return time_billing(facts, program.families[facts.setting], countable, rule_set)


def apcm_billing(
    facts: Facts, program: Program, countable: tuple[TimeEntry, ...], rule_set: RuleSet
) -> Billing:
    """§1 [S19]: the highest level the patient qualifies for; no time threshold."""
    settings = rule_set.settings
    minutes = total_minutes(countable)
    if minutes < settings.apcm_min_countable_minutes:
        # UNCONFIRMED (§1 notes, §4.8): bill only after a service was furnished in the month.
        return Billing(
            (),
            (
                Finding(
                    "BELOW_THRESHOLD",
                    f"{minutes} countable minutes; APCM needs a furnished service in the month "
                    f"(at least {settings.apcm_min_countable_minutes} countable minutes)",
                ),
            ),
        )
    conditions = len(facts.patient.chronic_conditions)
    level = next(
        level
        for level in program.levels
        if conditions >= level.min_conditions and (facts.patient.qmb or not level.qmb)
    )
    day = facts.last_day
    if settings.apcm_date_of_service == "first_service" and countable:
        day = min(entry.date for entry in countable)
    return Billing((Line(level.code, 1, day),), ())


def time_billing(
    facts: Facts, families: tuple[Family, ...], countable: tuple[TimeEntry, ...], rule_set: RuleSet
) -> Billing:
    """CCM/PCM lines from countable minutes under the facts' practitioner-time policy."""
    pool = pool_option(families, countable, facts.complex_mdm)
    practitioner = practitioner_option(families, countable, facts)
    chosen = chosen_option(pool, practitioner, facts.policy.practitioner_time, rule_set)
    if chosen is None:
        return Billing((), (below_threshold(families, countable),))
    return Billing(
        option_lines(chosen, facts), tuple(option_notes(chosen, families, countable, facts))
    )


def pool_option(
    families: tuple[Family, ...], countable: tuple[TimeEntry, ...], complex_mdm: bool
) -> Option | None:
    """The pooled-time family the minutes reach: complex first when attested (T7-T11)."""
    minutes = total_minutes(countable)
    candidates = [f for f in families if f.route == "pool" and (complex_mdm or not f.complex)]
    for family in sorted(candidates, key=lambda f: not f.complex):
        if minutes >= family.threshold:
            return Option(family, countable, minutes)
    return None


def practitioner_option(
    families: tuple[Family, ...], countable: tuple[TimeEntry, ...], facts: Facts
) -> Option | None:
    """The practitioner-only family (99491, 99424) if the billing practitioner's minutes reach it."""
    family = next((f for f in families if f.route == "practitioner"), None)
    if family is None:
        return None
    # Countable practitioner time is the billing practitioner's (others are excluded).
    entries = tuple(e for e in countable if facts.staff[e.staff].role == "practitioner")
    minutes = total_minutes(entries)
    return Option(family, entries, minutes) if minutes >= family.threshold else None


def chosen_option(
    pool: Option | None, practitioner: Option | None, policy: str, rule_set: RuleSet
) -> Option | None:
    """Never two base codes (C2, C3): one family, by policy."""
    if practitioner is None or policy == "pool":
        return pool
    if policy == "physician_codes" or pool is None:
        return practitioner
    # maximize: the higher total by the year's fee table; ties go to pool (T16).
    return practitioner if option_fee(practitioner, rule_set) > option_fee(pool, rule_set) else pool


def option_fee(option: Option, rule_set: RuleSet) -> Decimal:
    family = option.family
    amount = rule_set.fee(family.base).amount
    if units := family.add_on_units(option.minutes):
        amount += units * rule_set.fee(family.add_on).amount
    return amount


def option_lines(option: Option, facts: Facts) -> tuple[Line, ...]:
    family = option.family
    day = date_of_service(facts, option)
    lines = [Line(family.base, 1, day)]
    if units := family.add_on_units(option.minutes):
        lines.append(Line(family.add_on, units, day))
    return tuple(lines)


def date_of_service(facts: Facts, option: Option) -> date:
    """§4.8: month end, or the day the route's minutes, summed in date order, reached the base threshold."""
    if facts.policy.date_of_service == "month_end":
        return facts.last_day
    running = 0
    for entry in sorted(option.entries, key=lambda e: e.date):
        running += entry.minutes
        if running >= option.family.threshold:
            return entry.date
    raise AssertionError("an option always reaches its threshold")


def option_notes(
    chosen: Option, families: tuple[Family, ...], countable: tuple[TimeEntry, ...], facts: Facts
) -> list[Finding]:
    """COMPLEX_BELOW_60 and UNBILLED_MINUTES for the chosen lines."""
    notes = []
    pooled = total_minutes(countable)
    complex_family = next((f for f in families if f.complex), None)
    if facts.complex_mdm and complex_family is not None and pooled < complex_family.threshold:
        notes.append(
            Finding(
                "COMPLEX_BELOW_60",
                f"complex MDM attested but {pooled} countable minutes, under the {complex_family.threshold} "
                f"{complex_family.base} needs; {chosen.family.base} billed instead",
            )
        )
    capacity = chosen.family.capacity()
    if capacity is not None and chosen.minutes > capacity:
        message = f"{chosen.minutes - capacity} countable minutes beyond {chosen.family.add_on} x{chosen.family.cap}, the monthly unit cap"
        if (
            complex_family is not None
            and not chosen.family.complex
            and pooled >= complex_family.threshold
        ):
            message += f"; consider complex CCM ({complex_family.base}) if the MDM and care-plan criteria are met"
        notes.append(Finding("UNBILLED_MINUTES", message, minutes=chosen.minutes - capacity))
    if pooled > chosen.minutes:
        notes.append(
            Finding(
                "UNBILLED_MINUTES",
                f"{pooled - chosen.minutes} clinical-staff minutes unbilled: {chosen.family.base} counts only "
                f"the billing practitioner's own time (policy {facts.policy.practitioner_time})",
                minutes=pooled - chosen.minutes,
            )
        )
    return notes


def below_threshold(families: tuple[Family, ...], countable: tuple[TimeEntry, ...]) -> Finding:
    lowest = min(families, key=lambda f: f.threshold)
    return Finding(
        "BELOW_THRESHOLD",
        f"{total_minutes(countable)} countable minutes; {lowest.base} needs at least {lowest.threshold}",
    )
