"""Every message in the shared sample corpus (../shared/samples/hl7: real messages from public
projects, see its SOURCES.md) goes through `mapping check` and `ingest` without an unhandled
exception: each is mapped, ignored with a reason, or rejected with a reason. A chosen set of
files, including the quirky ones INDEX.tsv and SOURCES.md list, have their outcomes pinned.

The corpus lives outside this repository. When it is absent, no corpus case is collected and a
warning says so; the suite's own fixtures (tests/fixtures/hl7) cover every quirk we handle.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections import Counter
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ccm_connector import intake
from ccm_connector.hl7 import reader
from ccm_connector.mappings.profile import Profile, load_profile, profile_from_text
from ccm_connector.store import open_store

REPO = Path(__file__).resolve().parent.parent.parent
CORPUS = REPO.parent / "shared" / "samples" / "hl7"
NOT_SAMPLES = {"INDEX.tsv", "SOURCES.md"}
FILES = (
    sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name not in NOT_SAMPLES)
    if CORPUS.is_dir()
    else []
)
if not FILES:
    warnings.warn(
        f"HL7 sample corpus not present at {CORPUS}: no corpus cases collected", stacklevel=1
    )

CHICAGO = ZoneInfo("America/Chicago")
GENERIC = load_profile("generic-2.5.1")
# The corpus is mostly test (T) and debugging (D) messages, which the shipped profile ignores;
# the same profile accepting every processing id shows what the mapping makes of their contents.
ANY_PROCESSING = profile_from_text(
    resources.files("ccm_connector.mappings")
    .joinpath("profiles", "generic-2.5.1.toml")
    .read_text(encoding="utf-8")
    .replace('processing_ids = ["P"]', "processing_ids = []"),
    "generic-any",
    "generic-2.5.1 with processing_ids = []",
)


def rel(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def outcomes(path: Path, profile: Profile) -> list[dict]:
    return [
        intake.check_message(item, profile, CHICAGO)
        for item in reader.read_file(path.read_bytes()).items
    ]


# Defined only when the corpus is there: no case is collected (rather than skipped) without it.
if FILES:

    @pytest.mark.parametrize("path", FILES, ids=[rel(p) for p in FILES])
    def test_every_sample_is_mapped_ignored_or_rejected_with_a_reason(path: Path) -> None:
        for profile in (
            GENERIC,
            ANY_PROCESSING,
            load_profile("ecw-2.3"),
            load_profile("pmdsoft-2.3"),
        ):
            for line in outcomes(path, profile):
                assert line["action"] in ("mapped", "ignored", "rejected")
                if line["action"] == "mapped":
                    assert line["records"]
                else:
                    assert line["reason"] and line["records"] == []


def test_the_corpus_is_what_its_index_lists() -> None:
    if not FILES:
        warnings.warn(f"HL7 sample corpus not present at {CORPUS}", stacklevel=1)
        return
    listed = [
        line.split("\t")[0]
        for line in (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]
        if line
    ]
    assert sorted(listed) == sorted(rel(p) for p in FILES)


def test_ingesting_the_whole_corpus_stores_every_message_once(tmp_path: Path) -> None:
    if not FILES:
        warnings.warn(f"HL7 sample corpus not present at {CORPUS}", stacklevel=1)
        return
    stage = intake.Intake(open_store(tmp_path / "store.db"), ANY_PROCESSING, CHICAGO, b"k" * 32)
    total: Counter = Counter()
    for path in FILES:
        total.update(intake.ingest_bytes(stage, path.read_bytes(), rel(path)).counts)
    messages = sum(
        int(line.split("\t")[1])
        for line in (CORPUS / "INDEX.tsv").read_text(encoding="utf-8").splitlines()[1:]
        if line
    )
    db: sqlite3.Connection = stage.conn
    stored = db.execute("SELECT count(*) FROM inbound_message").fetchone()[0]
    quarantined = db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    assert stored == total["mapped"] + total["ignored"] + total["rejected"] + total["conflict"]
    assert quarantined == total["unreadable"]
    # every MSH the index counts is a stored message, a duplicate, or quarantined bytes holding it
    # (a broken MSH, or Mirth SimpleSender's literal "[SOM]MSH|..." placeholders)
    with_msh = db.execute(
        "SELECT count(*) FROM quarantine WHERE instr(content, CAST('MSH|' AS BLOB)) > 0"
    ).fetchone()[0]
    assert stored + total["duplicate"] + with_msh == messages
    # one row per distinct (sender, MSH-10, content); the rest are duplicates (Mirth's TestADT.txt
    # repeats 16 messages 124 times) and conflicts are the rows whose MSH-10 came first with other content
    keys = [
        (m.sender, m.control_id, m.content_hash)
        for p in FILES
        for m in reader.read_file(p.read_bytes()).messages
    ]
    assert stored == len(set(keys)) and total["duplicate"] == len(keys) - len(set(keys))
    assert total["conflict"] == len(set(keys)) - len({(s, c) for s, c, _ in keys})
    assert total["mapped"] > 30 and total["duplicate"] > 100


# file → [(action, reason or the record kinds)] per item, with the shipped profile and with ANY_PROCESSING
PINNED: dict[str, tuple[list[tuple[str, object]], list[tuple[str, object]]]] = {
    # UTF-8 BOM, trailing spaces after segments, 2.3.1, ICD-9 problems
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/PC1-Problem-Add-v2.3.1.hl7": (
        [("mapped", ["patient", "problem"])],
    )
    * 2,
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/PC1-Problem-Delete-v2.3.1.hl7": (
        [("mapped", ["patient", "problem"])],
    )
    * 2,
    # BOM, LF endings, v2.3 ADT^A01 inpatient
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/ADT01-23.hl7": (
        [("mapped", ["patient", "stay"])],
    )
    * 2,
    # MSH-18 ASCII, a discharge summary (not a CCM document), training message
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/MDM-T02-03.hl7": (
        [("ignored", "MSH-11: processing id T is not mapped by profile generic-2.5.1")],
        [("ignored", "TXA-2: document type DS is not a CCM document")],
    ),
    # file named SIU but holding ADT^A60
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/SIU_12.hl7": (
        [("ignored", "MSH-9: message type ADT^A60 is not mapped by profile generic-2.5.1")],
        [("ignored", "MSH-9: message type ADT^A60 is not mapped by profile generic-any")],
    ),
    # ADT^A40 with two PID/MRG pairs
    "microsoft__FHIR-Converter/data/SampleData/Hl7v2/ADT-A40-02.hl7": (
        [("mapped", ["patient", "merge", "merge"])],
    )
    * 2,
    # FHS/BHS/BTS/FTS around three messages, two of them the same message
    "johnpaulett__python-hl7/tests/samples.py-extracted/sample_file1.hl7": (
        [("mapped", ["patient"])] * 3,
    )
    * 2,
    # a BHS in the middle of a message
    "johnpaulett__python-hl7/tests/samples.py-extracted/sample_bad_batch1.hl7": (
        [
            ("rejected", "PID: segment missing"),
            ("rejected", "segments outside any message (no MSH before them)"),
        ],
    )
    * 2,
    # MSH-2 '^\&' (no repetition separator), stray <VT> at the end, debugging message
    "ruby-hl7__ruby-hl7/test_data/adt_a01.hl7": (
        [("ignored", "MSH-11: processing id D is not mapped by profile generic-2.5.1")],
        [("mapped", ["patient"])],
    ),
    # FHS/BHS batch whose second message has MSH-2 '^~&' (no escape character)
    "ruby-hl7__ruby-hl7/test_data/realm/realm-bad-batch.hl7": (
        [("ignored", "MSH-9: message type ORU^R01 is not mapped by profile generic-2.5.1")] * 2,
        [("ignored", "MSH-9: message type ORU^R01 is not mapped by profile generic-any")] * 2,
    ),
    "ruby-hl7__ruby-hl7/test_data/empty.hl7": ([("rejected", "empty file")],) * 2,
    "ruby-hl7__ruby-hl7/test_data/empty-batch.hl7": ([("rejected", "no HL7 message found")],) * 2,
    # CRLF with MSH-2 '^~\\&' (a Java escape artefact) and literal '\r' text in fields
    "LinuxForHealth__hl7v2-fhir-converter/src/test/resources/sample_win.hl7": (
        [("ignored", "MSH-11: processing id T is not mapped by profile generic-2.5.1")],
        [("mapped", ["patient"])],
    ),
    # Mirth SimpleSender's literal [SOM]...[EOM] placeholders: not HL7 bytes
    "nextgenhealthcare__connect/simplesender/samples/hl7.txt": (
        [("rejected", "segments outside any message (no MSH before them)")],
    )
    * 2,
    # deliberately broken MSH segments
    "CDCgov__trusted-intermediary/examples/Test/Message/msh_present_but_missing_all_fields.hl7": (
        [("rejected", "MSH-2: encoding characters missing")],
    )
    * 2,
    "CDCgov__trusted-intermediary/examples/Test/Message/msh_present_but_missing_msh-10.hl7": (
        [("rejected", "MSH-10: message control id missing")],
    )
    * 2,
    "CDCgov__trusted-intermediary/examples/Test/Message/msh_present_but_missing_msh-9.hl7": (
        [("rejected", "MSH-9: message type missing")],
    )
    * 2,
    "CDCgov__trusted-intermediary/examples/Test/Message/empty.hl7": ([("rejected", "empty file")],)
    * 2,
    # two v2.3 ADT^A08 separated by a blank line; the first has no PID-3, the second's surname is in FN.3
    "dib0__NHapiTools/test/NHapiTools.Tests/TestMessages/ADT_A08.txt": (
        [("rejected", "PID-3: no medical record number"), ("mapped", ["patient"])],
    )
    * 2,
    # pMDsoft DFT^P03 2.3: none of its codes is a care-management service
    "dib0__NHapiTools/test/NHapiTools.Tests/TestMessages/DFT_P03.txt": ([("mapped", ["patient"])],)
    * 2,
    # MSH-12 '2.4^^', MSH-17 ' USA', MSH-18 ASCII, no MSH-10
    "dib0__NHapiTools/test/NHapiTools.Tests/TestMessages/Base64/ORU_01.txt": (
        [("rejected", "MSH-10: message control id missing")],
    )
    * 2,
}
PINNED_PRESENT = sorted(p for p in PINNED if (CORPUS / p).is_file()) if FILES else []


def summary(lines: list[dict]) -> list[tuple[str, object]]:
    return [
        (
            line["action"],
            [r["kind"] for r in line["records"]] if line["action"] == "mapped" else line["reason"],
        )
        for line in lines
    ]


if PINNED_PRESENT:

    @pytest.mark.parametrize("name", PINNED_PRESENT)
    def test_pinned_outcomes(name: str) -> None:
        shipped, permissive = (
            PINNED[name] if len(PINNED[name]) == 2 else (PINNED[name][0], PINNED[name][0])
        )
        assert summary(outcomes(CORPUS / name, GENERIC)) == shipped
        assert summary(outcomes(CORPUS / name, ANY_PROCESSING)) == [
            (a, r.replace("generic-2.5.1", "generic-any") if isinstance(r, str) else r)
            for a, r in permissive
        ]


def test_every_pinned_file_is_in_the_corpus() -> None:
    if not FILES:
        warnings.warn(f"HL7 sample corpus not present at {CORPUS}", stacklevel=1)
        return
    assert PINNED_PRESENT == sorted(PINNED)


def test_the_mirth_adt_feed_maps_every_message() -> None:
    """124 v2.3.1 ADT messages, CRLF, blank lines between them (Mirth's TestADT.txt)."""
    path = CORPUS / "nextgenhealthcare__connect/simplesender/samples/TestADT.txt"
    if not path.is_file():
        warnings.warn(f"HL7 sample corpus not present at {CORPUS}", stacklevel=1)
        return
    lines = outcomes(path, ANY_PROCESSING)
    assert len(lines) == 124
    assert Counter(line["type"] for line in lines) == {"ADT^A31": 66, "ADT^A01": 49, "ADT^A04": 9}
    assert all(line["action"] == "mapped" for line in lines)
    stays = [r for line in lines for r in line["records"] if r["kind"] == "stay"]
    assert stays and {s["stay_kind"] for s in stays} <= {"inpatient", "snf"}
