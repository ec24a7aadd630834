"""A synthetic practice for `demo` and the end-to-end tests: seeded, pure functions, no I/O.

- `generate(seed, month)`: a small practice (staff roster, a few dozen patients, their month) as
  plain data, with the problems the demo plants recorded in `Practice.planted`.
- `messages(practice)`: the HL7 v2 feed the EHR would send for it (docs/hl7-interface.md):
  ADT^A04 registrations, PPR^PC1 problem lists, DFT^P03 initiating visits, MDM^T02 consents,
  care plans and CCM touchpoints, ADT^A01/A03 inpatient stays; in event order.
- `roster_csv(staff)`: the staff roster file (connector/roster.py).
- `offshore_return(workqueue, scenario)`: the simulated offshore team. It reads a decrypted work
  queue and writes the return it would send: one entry per touchpoint, plus the planted
  mistakes, a care-plan draft for a plan that lacks elements, and the codes it thinks each
  patient-month bills (its own arithmetic, so some are wrong).
- `review_answer(packet, ...)`: the simulated EHR's answer to a review packet (MDM^T04 signed by
  the physician, or returned with a reason).

Everything is a function of its arguments (one `random.Random(seed)`), so the same seed and month
give the same practice, byte for byte. All names and identifiers are invented.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import itertools
import random
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from .exchange_documents import WQ, Change, Draft, Entry, ProposedCode, Return, build_return
from .facts import CARE_PLAN_ELEMENTS
from .hl7.reader import escape
from .roster import COLUMNS as ROSTER_COLUMNS
from .sftp.documents import WORKQUEUE_NS, check

ZONE = "America/Chicago"
OFFSHORE_ZONE = "Asia/Kolkata"  # the offshore team's calendar
PRACTICE_ID = "LOCALDEMO"  # `init --local`'s [practice] id
BILLING_NPI = "1234567893"  # `init --local`'s [practice] billing_npis
EHR = ("EHR", "CLINIC")  # MSH-3 / MSH-4 of the simulated EHR
CONNECTOR = "CCMCONNECTOR"  # [mllp] application
ELEMENTS = CARE_PLAN_ELEMENTS


# --- the practice as data ---------------------------------------------------------------------


@dataclass(frozen=True)
class StaffMember:
    staff_id: str
    name: str
    credential: str
    role: str  # clinical | practitioner | non_clinical
    location: str
    supervisor_npi: str = ""
    npi: str = ""
    offshore_account: bool = False
    excluded: bool = False

    def row(self) -> dict[str, str]:
        return {
            "staff_id": self.staff_id,
            "name": self.name,
            "credential": self.credential,
            "role": self.role,
            "location": self.location,
            "supervisor_npi": self.supervisor_npi,
            "npi": self.npi,
            "excluded": "true" if self.excluded else "false",
            "offshore_account": "true" if self.offshore_account else "false",
        }


STAFF = (
    StaffMember("DR1", "Dana Reyes", "MD", "practitioner", "US", npi=BILLING_NPI),
    StaffMember("RN1", "Sam Lee", "RN", "clinical", "US", BILLING_NPI),
    StaffMember("RN2", "Maria Alvarez", "RN", "clinical", "US", BILLING_NPI),
    StaffMember("LPN1", "Jordan Price", "LPN", "clinical", "US", BILLING_NPI),
    StaffMember("MA1", "Alex Kim", "MA", "clinical", "US", BILLING_NPI),
    StaffMember("SCH1", "Pat Doe", "", "non_clinical", "US"),
    StaffMember(
        "OFF1", "Offshore documentation account", "", "non_clinical", "IN", offshore_account=True
    ),
    StaffMember(
        "OFF2", "Offshore quality reviewer", "", "non_clinical", "IN", offshore_account=True
    ),
)
PRACTITIONER = STAFF[0]
CLINICAL = ("RN1", "RN2", "LPN1", "MA1")
CLINICAL_WEIGHTS = (35, 30, 15, 20)
RECORDER = "OFF1"  # the offshore documentation account
TEAM = ("OFF1", "OFF2")  # the offshore team's users (return preparedBy)


@dataclass(frozen=True)
class Condition:
    code: str  # ICD-10-CM, dot form
    text: str
    short: str  # how staff refer to it in a note


CHRONIC = (
    Condition("E11.9", "Type 2 diabetes mellitus without complications", "diabetes"),
    Condition(
        "M81.0", "Age-related osteoporosis without current pathological fracture", "osteoporosis"
    ),
    Condition("I10", "Essential (primary) hypertension", "blood pressure"),
    Condition("I50.32", "Chronic diastolic (congestive) heart failure", "heart failure"),
    Condition("J44.9", "Chronic obstructive pulmonary disease, unspecified", "COPD"),
    Condition("N18.31", "Chronic kidney disease, stage 3a", "kidney disease"),
    Condition("E78.5", "Hyperlipidemia, unspecified", "cholesterol"),
    Condition("I48.91", "Unspecified atrial fibrillation", "atrial fibrillation"),
    Condition("F33.1", "Major depressive disorder, recurrent, moderate", "depression"),
    Condition("M17.0", "Bilateral primary osteoarthritis of knee", "knee arthritis"),
    Condition("E03.9", "Hypothyroidism, unspecified", "thyroid"),
    Condition(
        "I25.10",
        "Atherosclerotic heart disease of native coronary artery without angina pectoris",
        "heart disease",
    ),
    Condition("J45.40", "Moderate persistent asthma, uncomplicated", "asthma"),
    Condition("G47.33", "Obstructive sleep apnea", "sleep apnea"),
)
SYMPTOM = Condition(
    "R53.83", "Other fatigue", "fatigue"
)  # on a problem list, never a chronic condition


@dataclass(frozen=True)
class Visit:
    date: dt.date
    code: str = "99214"  # 99214 qualifies as an initiating visit; 99211 does not
    npi: str = BILLING_NPI


@dataclass(frozen=True)
class ConsentDoc:
    date: dt.date
    program: str = "ccm"  # ccm | pcm
    npi: str = BILLING_NPI
    documented_by: str = "RN1"


@dataclass(frozen=True)
class PlanDoc:
    date: dt.date
    elements: tuple[str, ...] = ELEMENTS
    shared_on: dt.date | None = None
    reviewed_on: dt.date | None = None


@dataclass(frozen=True)
class StayEvent:
    admitted: dt.datetime  # aware, practice zone
    discharged: dt.datetime
    visit_id: str


@dataclass(frozen=True)
class SyntheticPatient:
    mrn: str
    family: str
    given: str
    birth_date: dt.date
    sex: str
    mbi: str
    conditions: tuple[Condition, ...]
    registered: dt.date
    visit: Visit | None
    consent: ConsentDoc | None
    care_plan: PlanDoc | None
    stays: tuple[StayEvent, ...] = ()


@dataclass(frozen=True)
class SyntheticTouchpoint:
    id: str  # TXA-12
    mrn: str
    staff_id: str
    start: dt.datetime  # aware, practice zone
    minutes: int
    activity: str
    summary: str


@dataclass(frozen=True)
class Planted:
    """The problems planted for reconciliation to find. Touchpoint ids unless said otherwise."""

    unsupported: str | None = None  # its patient gets an entry that cites no practice record
    inflated: tuple[str, int] | None = None  # logged with this many extra minutes
    recorder_as_performer: str | None = None  # logged with the offshore account as performer
    duplicate: str | None = None  # logged twice (second entry: new id, same source and content)
    next_day: str | None = None  # month-end evening touchpoint the team dates by India's calendar
    overlap: tuple[str, str] | None = None  # one nurse, two patients, overlapping (in the feed)
    inpatient: str | None = None  # a touchpoint during an inpatient stay (in the feed)
    incomplete_plan: str | None = None  # MRN whose care plan lacks elements (the team drafts them)
    no_consent: str | None = None  # MRN with practice time but no consent on record
    not_initiated: tuple[str, ...] = ()  # MRNs whose only visit is a 99211


@dataclass(frozen=True)
class Practice:
    month: str
    patients: tuple[SyntheticPatient, ...]
    touchpoints: tuple[SyntheticTouchpoint, ...]
    planted: Planted = Planted()
    staff: tuple[StaffMember, ...] = STAFF
    zone: str = ZONE
    practice_id: str = PRACTICE_ID
    control_prefix: str = "SYN"
    seed: int | None = None

    def names(self) -> list[str]:
        """Every patient name used (for no-PHI checks)."""
        return sorted({p.family for p in self.patients} | {p.given for p in self.patients})


# --- generation --------------------------------------------------------------------------------

FAMILY = (
    "Abernathy",
    "Bergstrom",
    "Castellano",
    "Delacroix",
    "Esterhazy",
    "Fairweather",
    "Galloway",
    "Haverford",
    "Ingersoll",
    "Jankowski",
    "Kowalczyk",
    "Lindqvist",
    "Marchetti",
    "Nakamura",
    "Okonkwo",
    "Pennington",
    "Quintero",
    "Rasmussen",
    "Szabo",
    "Thibodeaux",
    "Underhill",
    "Vandermeer",
    "Whitfield",
    "Xiong",
    "Yamamoto",
    "Zielinski",
    "Ashcroft",
    "Brannigan",
    "Cavanaugh",
    "Dabrowski",
    "Eckhardt",
    "Fitzgerald",
    "Gustafson",
    "Holloway",
    "Ivanova",
    "Kilpatrick",
    "Lachance",
    "Montgomery",
    "Novak",
    "Oyelaran",
    "Pemberton",
    "Radcliffe",
)
GIVEN_F = (
    "Eleanor",
    "Margaret",
    "Dorothy",
    "Beatrice",
    "Mildred",
    "Gwendolyn",
    "Rosalind",
    "Harriet",
    "Lucille",
    "Winifred",
    "Geraldine",
    "Imogene",
    "Josephine",
    "Loretta",
    "Marguerite",
    "Ophelia",
)
GIVEN_M = (
    "Harold",
    "Walter",
    "Eugene",
    "Clarence",
    "Raymond",
    "Leonard",
    "Bernard",
    "Cornelius",
    "Franklin",
    "Herbert",
    "Lawrence",
    "Mortimer",
    "Reginald",
    "Stanley",
    "Theodore",
    "Wendell",
)
MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"

# Activity code -> (label, weight, one-line summaries; {c} is a condition's short name).
ACTIVITIES: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "PHONE": (
        "Follow-up call",
        24,
        (
            "Called to check on {c} since the last visit; stable, no new concerns.",
            "Follow-up call on {c}; reviewed home readings and warning signs.",
            "Checked in by phone; patient reports better sleep and steady {c}.",
        ),
    ),
    "MEDREC": (
        "Medication reconciliation",
        16,
        (
            "Reconciled the medication list against pharmacy fill history; no changes.",
            "Medication review by phone; stopped duplicate OTC pain reliever.",
            "Confirmed dosing for {c} medicines with patient and caregiver.",
        ),
    ),
    "REFILL": (
        "Refill management",
        12,
        (
            "Processed 90-day refill for {c} medication; sent to pharmacy.",
            "Coordinated refill timing so all maintenance medicines renew together.",
        ),
    ),
    "LABS": (
        "Lab result follow-up",
        10,
        (
            "Reviewed recent labs for {c} with patient; repeat in 3 months.",
            "Explained lab results; scheduled follow-up draw before next visit.",
        ),
    ),
    "COORD": (
        "Care coordination",
        12,
        (
            "Coordinated referral for {c}; specialist appointment scheduled.",
            "Sent records to home health agency and confirmed start of care.",
            "Arranged transportation for upcoming specialist visit.",
        ),
    ),
    "EDU": (
        "Self-management education",
        10,
        (
            "Taught home monitoring for {c}; patient demonstrated technique.",
            "Reviewed diet and activity goals for {c}; set a weekly target.",
        ),
    ),
    "PORTAL": (
        "Portal message",
        8,
        (
            "Answered portal question about {c} medication side effects.",
            "Replied to portal message; advised to keep a symptom log.",
        ),
    ),
    "CAREPLAN": (
        "Care plan review",
        6,
        (
            "Reviewed care plan goals for {c} with patient; goals unchanged.",
            "Updated self-management goal in the care plan with patient input.",
        ),
    ),
    "COMMRES": (
        "Community resources",
        2,
        (
            "Connected patient with meal delivery program.",
            "Gave information on senior center exercise classes.",
        ),
    ),
}
LABELS = {code: spec[0] for code, spec in ACTIVITIES.items()} | {
    "TRANS": "Transition of care follow-up",
    "CHARTPREP": "Chart preparation",
}
TRANSITION = (
    "TRANS",
    "Post-discharge call: reviewed discharge instructions and follow-up appointment.",
)
DURING_STAY = ("COORD", "Spoke with the hospital case manager about the discharge plan.")
AFTER_HOURS = (
    "PHONE",
    "After-hours call: reported dizziness; advised to check blood pressure and call back.",
)


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    year, mon = int(month[:4]), int(month[5:7])
    return dt.date(year, mon, 1), dt.date(year, mon, calendar.monthrange(year, mon)[1])


def _mbi(rng: random.Random) -> str:
    def letter() -> str:
        return rng.choice(MBI_LETTERS)

    def alnum() -> str:
        return rng.choice(MBI_LETTERS + "0123456789")

    def digit() -> str:
        return str(rng.randrange(10))

    return "".join(
        (
            str(rng.randint(1, 9)),
            letter(),
            alnum(),
            digit(),
            letter(),
            alnum(),
            digit(),
            letter(),
            letter(),
            digit(),
            digit(),
        )
    )


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` minutes in `parts` touchpoints of at least 2 minutes each."""
    out = [2] * parts
    for _ in range(total - 2 * parts):
        out[rng.randrange(parts)] += 1
    return out


class _Calendar:
    """Books staff time so that no one is in two places at once (except where planted)."""

    def __init__(self) -> None:
        self.booked: dict[tuple[str, dt.date], list[tuple[int, int]]] = {}

    def free(self, staff: str, day: dt.date, start: int, minutes: int) -> bool:
        end = start + minutes
        return all(end <= b or start >= e for b, e in self.booked.get((staff, day), []))

    def book(self, staff: str, day: dt.date, start: int, minutes: int) -> None:
        self.booked.setdefault((staff, day), []).append((start, start + minutes))

    def slot(self, rng: random.Random, staff: str, day: dt.date, minutes: int) -> int | None:
        for _ in range(200):
            start = rng.randrange(8 * 60, 16 * 60 + 35, 5)
            if self.free(staff, day, start, minutes):
                self.book(staff, day, start, minutes)
                return start
        return None


def generate(seed: int, month: str, patients: int = 36) -> Practice:
    """A practice of `patients` patients (at least 12) and its `month`, from `seed` alone."""
    if patients < 12:
        raise ValueError("the generated practice needs at least 12 patients to plant every problem")
    rng = random.Random(seed)
    zone = ZoneInfo(ZONE)
    first, last = month_bounds(month)
    weekdays = [
        first + dt.timedelta(days=i)
        for i in range((last - first).days + 1)
        if (first + dt.timedelta(days=i)).weekday() < 5
    ]

    kinds = ["no_consent", "not_initiated", "not_initiated", "too_few", "pcm", "pcm", "pcm"]
    kinds += ["ccm"] * (patients - len(kinds))
    rng.shuffle(kinds)
    names = rng.sample(
        [(f, g, "F") for f in FAMILY for g in GIVEN_F]
        + [(f, g, "M") for f in FAMILY for g in GIVEN_M],
        patients,
    )
    mrns = rng.sample(range(100000, 1000000), patients)

    people: list[SyntheticPatient] = []
    for i, kind in enumerate(kinds):
        family, given, sex = names[i]
        if kind in ("pcm", "too_few"):
            conditions = (rng.choice(CHRONIC),) + ((SYMPTOM,) if rng.random() < 0.5 else ())
        else:
            conditions = tuple(rng.sample(CHRONIC, rng.randint(2, 4)))
        consent_day = _weekday(first - dt.timedelta(days=rng.randint(20, 400)))
        same_day = kind == "not_initiated" or rng.random() < 0.7
        visit_day = (
            consent_day
            if same_day
            else _weekday(consent_day - dt.timedelta(days=rng.randint(3, 40)))
        )
        visit = Visit(visit_day, "99211" if kind == "not_initiated" else "99214")
        consent = (
            None
            if kind == "no_consent"
            else ConsentDoc(
                consent_day,
                "pcm" if kind == "pcm" else "ccm",
                documented_by=rng.choice(CLINICAL[:2]),
            )
        )
        plan_day = min(
            consent_day + dt.timedelta(days=rng.randint(0, 10)), first - dt.timedelta(days=3)
        )
        reviewed = (
            first - dt.timedelta(days=rng.randint(15, 200))
            if (first - plan_day).days > 300
            else None
        )
        plan = PlanDoc(
            plan_day, ELEMENTS, plan_day + dt.timedelta(days=rng.randint(0, 2)), reviewed
        )
        people.append(
            SyntheticPatient(
                mrn=f"MRN{mrns[i]}",
                family=family,
                given=given,
                birth_date=dt.date(
                    first.year - rng.randint(66, 92), rng.randint(1, 12), rng.randint(1, 28)
                ),
                sex=sex,
                mbi=_mbi(rng),
                conditions=conditions,
                registered=consent_day - dt.timedelta(days=rng.randint(400, 3000)),
                visit=visit,
                consent=consent,
                care_plan=plan,
            )
        )

    # Who carries what: planted problems only on otherwise clean CCM patients.
    ccm = [i for i, k in enumerate(kinds) if k == "ccm"]
    rng.shuffle(ccm)
    unsupported, inflated, recorder, duplicate, next_day, over_a, over_b, incomplete = ccm[:8]
    stay_holders = [i for i, k in enumerate(kinds) if k in ("ccm", "pcm") and i not in ccm[:8]][:3]
    p = people[incomplete]
    people[incomplete] = _replace(
        p,
        care_plan=PlanDoc(
            p.care_plan.date,
            ELEMENTS[:6] + ELEMENTS[7:8],
            p.care_plan.shared_on,
            p.care_plan.reviewed_on,
        ),
    )

    cal = _Calendar()
    drafts: list[
        dict
    ] = []  # touchpoints before ids: mrn, staff, start, minutes, activity, summary, tag

    def add(
        i: int,
        staff: str,
        day: dt.date,
        start_minute: int,
        minutes: int,
        activity: str,
        summary: str,
        tag: str | None = None,
    ) -> None:
        start = dt.datetime.combine(day, dt.time(start_minute // 60, start_minute % 60), zone)
        drafts.append(
            {
                "mrn": people[i].mrn,
                "staff": staff,
                "start": start,
                "minutes": minutes,
                "activity": activity,
                "summary": summary,
                "tag": tag,
            }
        )

    # Planted in the feed first, so that random booking works around them.
    day = weekdays[len(weekdays) // 2]
    cal.book("RN2", day, 10 * 60, 20)
    cal.book("RN2", day, 10 * 60 + 10, 15)
    add(
        over_a,
        "RN2",
        day,
        10 * 60,
        20,
        "PHONE",
        _summary(rng, "PHONE", people[over_a]),
        "overlap_a",
    )
    add(
        over_b,
        "RN2",
        day,
        10 * 60 + 10,
        15,
        "MEDREC",
        _summary(rng, "MEDREC", people[over_b]),
        "overlap_b",
    )
    add(next_day, "RN1", last, 21 * 60 + 10, 12, AFTER_HOURS[0], AFTER_HOURS[1], "next_day")
    cal.book("RN1", last, 21 * 60 + 10, 12)

    in_hospital: dict[str, set[dt.date]] = {}  # no routine calls while a patient is admitted
    for n, i in enumerate(stay_holders):
        admit_day = first + dt.timedelta(days=rng.randint(3, 18))
        discharge_day = admit_day + dt.timedelta(days=rng.randint(2, 5))
        stay = StayEvent(
            dt.datetime.combine(
                admit_day, dt.time(rng.randint(1, 22), rng.choice((5, 20, 35, 50))), zone
            ),
            dt.datetime.combine(
                discharge_day, dt.time(rng.randint(10, 16), rng.choice((0, 15, 30, 45))), zone
            ),
            f"V{month.replace('-', '')}{n + 1:03d}",
        )
        people[i] = _replace(people[i], stays=(stay,))
        in_hospital[people[i].mrn] = {
            admit_day + dt.timedelta(days=k) for k in range((discharge_day - admit_day).days + 1)
        }
        during = admit_day + dt.timedelta(days=1)
        start = cal.slot(rng, "RN1", during, 10)
        if start is not None:
            add(
                i,
                "RN1",
                during,
                start,
                10,
                DURING_STAY[0],
                DURING_STAY[1],
                "inpatient" if n == 0 else None,
            )
        after = discharge_day + dt.timedelta(days=rng.randint(1, 2))
        if after <= last:
            start = cal.slot(rng, "RN2", after, 15)
            if start is not None:
                add(i, "RN2", after, start, 15, TRANSITION[0], TRANSITION[1])

    for i, kind in enumerate(kinds):
        have = sum(1 for d in drafts if d["mrn"] == people[i].mrn)
        have_minutes = sum(d["minutes"] for d in drafts if d["mrn"] == people[i].mrn)
        if kind == "no_consent":
            target = rng.randint(15, 30)
        else:
            band = rng.random()
            target = (
                rng.randint(8, 19)
                if band < 0.15
                else rng.randint(20, 59)
                if band < 0.7
                else rng.randint(60, 95)
            )
        count = max(1, min(rng.randint(5, 25), max(5, target // 2)) - have)
        target = max(2 * count, target - have_minutes)
        for minutes in _split(rng, target, count):
            for _ in range(20):
                staff = rng.choices(CLINICAL, CLINICAL_WEIGHTS)[0]
                day = rng.choice(weekdays)
                if day in in_hospital.get(people[i].mrn, ()):
                    continue
                start = cal.slot(rng, staff, day, minutes)
                if start is not None:
                    activity = rng.choices(list(ACTIVITIES), [a[1] for a in ACTIVITIES.values()])[0]
                    add(i, staff, day, start, minutes, activity, _summary(rng, activity, people[i]))
                    break

    # Targets for the planted log mistakes: each patient's first regular touchpoint.
    def first_of(i: int) -> dict:
        return min(
            (d for d in drafts if d["mrn"] == people[i].mrn and d["tag"] is None),
            key=lambda d: d["start"],
        )

    for i, tag in (
        (unsupported, "unsupported"),
        (inflated, "inflated"),
        (recorder, "recorder"),
        (duplicate, "duplicate"),
    ):
        first_of(i)["tag"] = tag

    drafts.sort(key=lambda d: (d["start"], d["mrn"], d["staff"]))
    prefix = f"TP-{month.replace('-', '')}-"
    touchpoints = tuple(
        SyntheticTouchpoint(
            f"{prefix}{n:05d}",
            d["mrn"],
            d["staff"],
            d["start"],
            d["minutes"],
            d["activity"],
            d["summary"],
        )
        for n, d in enumerate(drafts, start=1)
    )
    tagged = {d["tag"]: touchpoints[n].id for n, d in enumerate(drafts) if d["tag"]}
    planted = Planted(
        unsupported=tagged["unsupported"],
        inflated=(tagged["inflated"], 15),
        recorder_as_performer=tagged["recorder"],
        duplicate=tagged["duplicate"],
        next_day=tagged["next_day"],
        overlap=(tagged["overlap_a"], tagged["overlap_b"]),
        inpatient=tagged.get("inpatient"),
        incomplete_plan=people[incomplete].mrn,
        no_consent=people[kinds.index("no_consent")].mrn,
        not_initiated=tuple(people[i].mrn for i, k in enumerate(kinds) if k == "not_initiated"),
    )
    return Practice(month, tuple(people), touchpoints, planted, seed=seed)


def _weekday(day: dt.date) -> dt.date:
    """The day, or the Friday before it when it falls on a weekend (the office is closed)."""
    return day - dt.timedelta(days=max(0, day.weekday() - 4))


def _replace(patient: SyntheticPatient, **changes: object) -> SyntheticPatient:
    return replace(patient, **changes)


def _summary(rng: random.Random, activity: str, patient: SyntheticPatient) -> str:
    chronic = [c for c in patient.conditions if c is not SYMPTOM] or list(patient.conditions)
    return rng.choice(ACTIVITIES[activity][2]).format(c=rng.choice(chronic).short)


# --- the HL7 feed ------------------------------------------------------------------------------


def ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def d8(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: text}; the text is already escaped where needed."""
    top = max(fields)
    return "|".join([name, *(fields.get(n, "") for n in range(1, top + 1))])


def _xcn(member: StaffMember, marker: str) -> str:
    """XCN: the NPI (marker NPI) or the roster id (marker ROSTER), family, given."""
    given, _, family = member.name.rpartition(" ")
    ident = member.npi if marker == "NPI" else member.staff_id
    return f"{ident}^{escape(family.upper())}^{escape(given.upper())}^^^^^^{marker}"


def _msh(practice: Practice, moment: dt.datetime, kind: str, structure: str, control: str) -> str:
    return (
        f"MSH|^~\\&|{EHR[0]}|{EHR[1]}|{CONNECTOR}|{practice.practice_id}|{ts(moment)}||{kind}^{structure}|{control}|P|2.5.1"
        "|||AL|NE||UNICODE UTF-8"
    )


def _pid(practice: Practice, p: SyntheticPatient) -> str:
    return segment(
        "PID",
        {
            1: "1",
            3: f"{p.mrn}^^^{practice.practice_id}^MR~{p.mbi}^^^CMS^MC",
            5: f"{escape(p.family.upper())}^{escape(p.given.upper())}",
            7: d8(p.birth_date),
            8: p.sex,
        },
    )


def _document(
    practice: Practice,
    p: SyntheticPatient,
    moment: dt.datetime,
    control: str,
    doc_type: str,
    when: dt.datetime,
    author: StaffMember,
    doc_id: str,
    obx: list[tuple[str, str, str]],
) -> str:
    segments = [
        _msh(practice, moment, "MDM^T02", "MDM_T02", control),
        f"EVN|T02|{ts(moment)}",
        _pid(practice, p),
        "PV1|1|O|CLINIC",
        segment(
            "TXA",
            {
                1: "1",
                2: doc_type,
                3: "TX",
                4: ts(when),
                5: _xcn(author, "ROSTER"),
                7: ts(moment),
                12: doc_id,
                17: "AU",
            },
        ),
    ]
    for n, (ident, vtype, value) in enumerate(obx, start=1):
        segments.append(segment("OBX", {1: str(n), 2: vtype, 3: ident, 5: value, 11: "F"}))
    return "\r".join(segments)


def messages(practice: Practice) -> list[str]:
    """The practice's HL7 v2 feed for its month, oldest event first (segments end in CR)."""
    zone = ZoneInfo(practice.zone)
    staff = {s.staff_id: s for s in practice.staff}
    doctor = next(s for s in practice.staff if s.role == "practitioner")
    events: list[tuple[dt.datetime, int, str, object]] = []  # (when, order, kind, what)
    by_mrn = {p.mrn: p for p in practice.patients}
    for p in practice.patients:
        events.append((dt.datetime.combine(p.registered, dt.time(9, 0), zone), 0, "A04", p))
        if p.visit is not None:
            events.append((dt.datetime.combine(p.visit.date, dt.time(11, 40), zone), 1, "PC1", p))
            events.append((dt.datetime.combine(p.visit.date, dt.time(17, 5), zone), 2, "P03", p))
        if p.consent is not None:
            events.append(
                (dt.datetime.combine(p.consent.date, dt.time(12, 15), zone), 3, "CONSENT", p)
            )
        if p.care_plan is not None:
            events.append(
                (dt.datetime.combine(p.care_plan.date, dt.time(15, 30), zone), 4, "PLAN", p)
            )
        for stay in p.stays:
            events.append((stay.admitted, 5, "A01", (p, stay)))
            events.append((stay.discharged, 6, "A03", (p, stay)))
    for t in practice.touchpoints:
        events.append((t.start + dt.timedelta(minutes=t.minutes + 3), 7, "TOUCH", t))
    events.sort(key=lambda e: (e[0], e[1], _key(e[3])))

    out = []
    for n, (when, _, kind, what) in enumerate(events, start=1):
        control = f"{practice.control_prefix}{n:06d}"
        if kind == "TOUCH":
            t = what
            p = by_mrn[t.mrn]
            label = LABELS.get(t.activity, t.activity)
            out.append(
                _document(
                    practice,
                    p,
                    when,
                    control,
                    "CCM-TOUCH",
                    t.start,
                    staff[t.staff_id],
                    t.id,
                    [
                        ("CCM-MIN^Minutes^L", "NM", str(t.minutes)),
                        ("CCM-ACT^Activity^L", "CE", f"{t.activity}^{escape(label)}^L"),
                        ("CCM-NOTE^Summary^L", "TX", escape(t.summary)),
                    ],
                )
            )
            continue
        if kind in ("A01", "A03"):
            p, stay = what
            pv1 = {
                1: "1",
                2: "I",
                3: "4W^412^1^GENHOSP",
                10: "MED",
                19: stay.visit_id,
                44: ts(stay.admitted),
            }
            if kind == "A03":
                pv1[45] = ts(stay.discharged)
            out.append(
                "\r".join(
                    [
                        _msh(
                            practice,
                            when,
                            f"ADT^{kind}",
                            "ADT_A01" if kind == "A01" else "ADT_A03",
                            control,
                        ),
                        f"EVN|{kind}|{ts(when)}",
                        _pid(practice, p),
                        segment("PV1", pv1),
                    ]
                )
            )
            continue
        p = what
        if kind == "A04":
            out.append(
                "\r".join(
                    [
                        _msh(practice, when, "ADT^A04", "ADT_A01", control),
                        f"EVN|A04|{ts(when)}",
                        _pid(practice, p),
                        segment("PV1", {1: "1", 2: "O", 3: "CLINIC", 7: _xcn(doctor, "NPI")}),
                    ]
                )
            )
        elif kind == "PC1":
            lines = [_msh(practice, when, "PPR^PC1", "PPR_PC1", control), _pid(practice, p)]
            for k, c in enumerate(p.conditions, start=1):
                onset = p.registered + dt.timedelta(days=30 * k)
                lines.append(
                    segment(
                        "PRB",
                        {
                            1: "AD",
                            2: ts(when),
                            3: f"{c.code}^{escape(c.text)}^I10",
                            4: f"{p.mrn}-{k}",
                            7: d8(onset),
                        },
                    )
                )
            out.append("\r".join(lines))
        elif kind == "P03":
            visit = p.visit
            day = d8(visit.date)
            diagnoses = "~".join(f"{c.code}^^I10" for c in p.conditions)
            performer = f"{visit.npi}^REYES^DANA^^^^^^NPI"
            descriptions = {
                "99214": "Office visit est pt moderate MDM",
                "99211": "Office visit est pt minimal",
            }
            lines = [
                _msh(practice, when, "DFT^P03", "DFT_P03", control),
                f"EVN|P03|{ts(when)}",
                _pid(practice, p),
                segment("PV1", {1: "1", 2: "O", 3: "CLINIC", 7: performer}),
                segment(
                    "FT1",
                    {
                        1: "1",
                        2: f"{control}-1",
                        4: f"{day}^{day}",
                        6: "CG",
                        7: f"{visit.code}^{descriptions[visit.code]}^CPT4",
                        10: "1",
                        19: diagnoses,
                        20: performer,
                        25: f"{visit.code}^{descriptions[visit.code]}^CPT4",
                    },
                ),
                segment(
                    "FT1",
                    {
                        1: "2",
                        2: f"{control}-2",
                        4: f"{day}^{day}",
                        6: "CG",
                        7: "36415^Venipuncture^CPT4",
                        10: "1",
                        19: diagnoses,
                        20: performer,
                        25: "36415^Venipuncture^CPT4",
                    },
                ),
            ]
            out.append("\r".join(lines))
        elif kind == "CONSENT":
            c = p.consent
            out.append(
                _document(
                    practice,
                    p,
                    when,
                    control,
                    "CCM-CONSENT",
                    dt.datetime.combine(c.date, dt.time(11, 55), zone),
                    staff[c.documented_by],
                    f"CN-{p.mrn}",
                    [
                        ("CCM-PROGRAM^Program^L", "ST", c.program),
                        ("CCM-STATUS^Status^L", "ST", "given"),
                        ("CCM-PRACT^Billing practitioner^L", "XCN", f"{c.npi}^REYES^DANA^^^^^^NPI"),
                    ],
                )
            )
        elif kind == "PLAN":
            plan = p.care_plan
            obx = [("CCM-ELEM^Element^L", "ST", e) for e in plan.elements]
            if plan.shared_on:
                obx.append(("CCM-SHARED^Shared with patient^L", "DT", d8(plan.shared_on)))
            if plan.reviewed_on:
                obx.append(("CCM-REVIEWED^Last reviewed^L", "DT", d8(plan.reviewed_on)))
            out.append(
                _document(
                    practice,
                    p,
                    when,
                    control,
                    "CCM-PLAN",
                    dt.datetime.combine(plan.date, dt.time(15, 0), zone),
                    doctor,
                    f"CP-{p.mrn}",
                    obx,
                )
            )
    return out


def _key(what: object) -> str:
    if isinstance(what, SyntheticTouchpoint):
        return what.id
    if isinstance(what, tuple):
        return what[0].mrn
    return what.mrn  # type: ignore[attr-defined]


def roster_csv(staff: tuple[StaffMember, ...] = STAFF) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(ROSTER_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for member in staff:
        writer.writerow(member.row())
    return out.getvalue()


# --- the simulated offshore team -------------------------------------------------------------


@dataclass(frozen=True)
class OffshoreScenario:
    """What the simulated team does with a queue: the return's identity and its mistakes."""

    return_id: str
    created: dt.datetime
    month: str  # the month the proposed codes are for
    planted: Planted = Planted()
    recorder: str = RECORDER
    prepared_by: tuple[str, ...] = TEAM
    drafts: int = 1  # at most this many care-plan drafts (for plans lacking elements)


def scenario_for(practice: Practice, return_id: str, created: dt.datetime) -> OffshoreScenario:
    return OffshoreScenario(return_id, created, practice.month, practice.planted)


DRAFT_TEXT = {
    "problems": "Problem list reviewed against the latest visit.",
    "outcomes": "Expected outcomes and prognosis restated with the patient.",
    "goals": "Measurable goals agreed with the patient.",
    "symptoms": "Symptom management plan per condition.",
    "interventions": "Planned interventions and who is responsible.",
    "medications": "Medication management plan after reconciliation.",
    "community_services": "Referral to the area agency on aging for meal delivery and transport.",
    "coordination": "Coordination with cardiology and home health; contacts listed.",
    "review_schedule": "Review the plan every 3 months and after any hospital stay.",
}
# The team's own arithmetic for proposed codes (the practice's rules engine decides).
TEAM_CODES = {"ccm": (("99490", 20), ("99439", 20, 2)), "pcm": (("99426", 30), ("99427", 30, 2))}


def _team_codes(program: str, minutes: int) -> list[tuple[str, int]]:
    plan = TEAM_CODES.get(program)
    if plan is None or minutes < plan[0][1]:
        return []
    (base, threshold), (add_on, step, cap) = plan
    extra = min(cap, (minutes - threshold) // step)
    return [(base, 1)] + ([(add_on, extra)] if extra else [])


def offshore_return(workqueue: bytes, scenario: OffshoreScenario) -> bytes:
    """The return the simulated team writes for one decrypted work queue (valid return-1 XML)."""
    root = check(workqueue, WORKQUEUE_NS).getroot()
    zone = ZoneInfo(root.get("timeZone"))
    india = ZoneInfo(OFFSHORE_ZONE)
    planted = scenario.planted
    inflated = dict([planted.inflated]) if planted.inflated else {}
    entries: list[Entry] = []
    later: list[Entry] = []
    drafts: list[Draft] = []
    codes: list[ProposedCode] = []

    numbers = itertools.count(1)

    def entry_id() -> str:
        return f"{scenario.return_id}-{next(numbers):05d}"

    for patient in root.iterfind(f"{WQ}patients/{WQ}patient"):
        pseudonym = patient.get("pseudonym")
        program = next((e.get("program") for e in patient.iterfind(f"{WQ}enrollment")), "ccm")
        logged: list[Entry] = []
        for t in patient.iterfind(f"{WQ}touchpoints/{WQ}touchpoint"):
            tp_id, staff = t.get("id"), t.get("staffId")
            day = dt.date.fromisoformat(t.get("date"))
            minutes = int(t.get("minutes"))
            summary = t.findtext(f"{WQ}summary") or ""
            description = f"Documented from the practice note: {summary}"
            if tp_id == planted.unsupported:
                logged.append(
                    Entry(
                        entry_id(),
                        pseudonym,
                        (),
                        staff,
                        day,
                        15,
                        "CHARTPREP",
                        "Pre-visit chart preparation and care-gap review.",
                    )
                )
            if tp_id == planted.next_day:
                hour, minute = (int(x) for x in t.get("start").split(":"))
                day = dt.datetime.combine(day, dt.time(hour, minute), zone).astimezone(india).date()
            performer = scenario.recorder if tp_id == planted.recorder_as_performer else staff
            entry = Entry(
                entry_id(),
                pseudonym,
                (tp_id,),
                performer,
                day,
                minutes + inflated.get(tp_id, 0),
                t.get("activity"),
                description,
            )
            logged.append(entry)
            if tp_id == planted.duplicate:
                later.append(
                    Entry(
                        entry_id(),
                        pseudonym,
                        entry.touchpoint_ids,
                        entry.performer,
                        entry.date,
                        entry.minutes,
                        entry.activity,
                        entry.description,
                    )
                )
        entries.extend(logged)
        month_minutes = sum(e.minutes for e in logged if e.date.strftime("%Y-%m") == scenario.month)
        month_minutes += sum(
            e.minutes
            for e in later
            if e.pseudonym == pseudonym and e.date.strftime("%Y-%m") == scenario.month
        )
        for code, units in _team_codes(program, month_minutes):
            codes.append(ProposedCode(pseudonym, scenario.month, code, units))
        plan = patient.find(f"{WQ}carePlan")
        if plan is not None and len(drafts) < scenario.drafts:
            have = {e.text for e in plan.iterfind(f"{WQ}element")}
            missing = [e for e in ELEMENTS if e not in have]
            if missing:
                drafts.append(
                    Draft(
                        pseudonym,
                        plan.get("documentId"),
                        tuple(Change(e, "add", DRAFT_TEXT[e]) for e in missing),
                    )
                )
    return build_return(
        Return(
            return_id=scenario.return_id,
            practice_id=root.get("practiceId"),
            created=scenario.created,
            answers=(root.get("batchId"),),
            prepared_by=scenario.prepared_by,
            entries=tuple(entries + later),
            drafts=tuple(drafts),
            codes=tuple(codes),
        )
    )


# --- the simulated EHR's answer to a review packet ---------------------------------------------


@dataclass(frozen=True)
class Signer:
    npi: str = BILLING_NPI
    family: str = "REYES"
    given: str = "DANA"
    degree: str = "MD"


def review_answer(
    packet: str,
    at: dt.datetime,
    control_id: str,
    signer: Signer | None = None,
    status: str = "AU",
    reason: str | None = None,
    trigger: str = "T04",
) -> str:
    """The EHR's MDM^T04 (or T06/T08/T11) for one review packet (an MDM^T02 we sent).

    TXA-2 CCM-REVIEW and TXA-12 the packet's document id; TXA-17 `AU`/`LA` signs, `IN`/`CA`
    returns it (with the reason in OBX CCM-NOTE); TXA-22 the authenticating practitioner (XCN-1
    the NPI, marked NPI); PID as the packet sent it.
    """
    signer = signer or Signer()
    lines = [line for line in packet.replace("\n", "\r").split("\r") if line]
    by_id = {line.split("|", 1)[0]: line for line in lines}
    msh = by_id["MSH"].split("|")
    txa = by_id["TXA"].split("|")
    signed = ts(at)
    authenticator = (
        f"{signer.npi}^{signer.family}^{signer.given}^^^^{signer.degree}^^NPI^^^^NPI^^{signed}"
    )
    segments = [
        f"MSH|^~\\&|{EHR[0]}|{EHR[1]}|{msh[2]}|{msh[3]}|{signed}||MDM^{trigger}^MDM_T02|{control_id}|P|2.5.1|||AL|NE",
        f"EVN|{trigger}|{signed}",
        by_id["PID"],
        "PV1|1|O",
        segment(
            "TXA",
            {
                1: "1",
                2: txa[2],
                3: "TX",
                4: txa[4],
                8: signed,
                12: txa[12],
                17: status,
                22: authenticator,
            },
        ),
    ]
    if reason:
        segments.append(
            segment("OBX", {1: "1", 2: "TX", 3: "CCM-NOTE^Reason^L", 5: escape(reason), 11: "F"})
        )
    return "\r".join(segments)
