"""mappings/profile.py: shipped profiles load; a practice copy wins; every error names file, key, reason."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from ccm_connector.errors import InputError
from ccm_connector.mappings.profile import (
    FieldRef,
    ProfileError,
    load_profile,
    parse_ref,
    profile_from_text,
    shipped_profiles,
)


def shipped_text(name: str = "generic-2.5.1") -> str:
    return (
        resources.files("ccm_connector.mappings")
        .joinpath("profiles", f"{name}.toml")
        .read_text(encoding="utf-8")
    )


def test_the_generic_profile_and_two_vendor_dialects_ship() -> None:
    names = shipped_profiles()
    assert "generic-2.5.1" in names
    assert {"ecw-2.3", "pmdsoft-2.3"} <= set(names)
    for name in names:
        profile = load_profile(name)
        assert profile.name == name
        assert profile.header.description


def test_the_generic_profile_states_the_ccm_document_contract() -> None:
    p = load_profile("generic-2.5.1")
    docs = p.documents
    assert (docs.touchpoint_type, docs.consent_type, docs.care_plan_type) == (
        "CCM-TOUCH",
        "CCM-CONSENT",
        "CCM-PLAN",
    )
    assert (str(docs.id_field), str(docs.time_field), str(docs.performer_field)) == (
        "TXA-12",
        "TXA-4",
        "TXA-5",
    )
    assert (docs.minutes_id, docs.activity_id, docs.note_id) == ("CCM-MIN", "CCM-ACT", "CCM-NOTE")
    assert (docs.program_id, docs.status_id, docs.practitioner_id, docs.element_id) == (
        "CCM-PROGRAM",
        "CCM-STATUS",
        "CCM-PRACT",
        "CCM-ELEM",
    )
    assert p.messages["MDM^T02"] == ("patient", "document")
    assert p.header.processing_ids == frozenset({"P"})


def test_the_ecw_dialect_reads_cpt_from_ft1_25_and_names_in_one_component() -> None:
    p = load_profile("ecw-2.3")
    assert [str(r) for r in p.services.code_fields] == ["FT1-25"]
    assert p.patient.name_style == "family_comma_given"
    assert p.header.versions == ("2.3", "2.3.1")


def test_service_code_lists_match_singles_and_ranges() -> None:
    s = load_profile("generic-2.5.1").services
    assert (
        s.wanted("99490")
        and s.wanted("99213")
        and s.wanted("g0439")
        and s.wanted("G0557")
        and s.wanted("90960")
    )
    assert (
        not s.wanted("99201")
        and not s.wanted("G0555")
        and not s.wanted("85025")
        and not s.wanted("X0181")
        and not s.wanted("9949")
    )


def test_a_practice_copy_in_profile_dir_wins_over_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "generic-2.5.1.toml").write_text(
        shipped_text().replace('processing_ids = ["P"]', 'processing_ids = ["P", "T"]')
    )
    assert load_profile("generic-2.5.1", tmp_path).header.processing_ids == frozenset({"P", "T"})
    assert load_profile("ecw-2.3", tmp_path).name == "ecw-2.3"  # falls back to the shipped one


def test_a_profile_can_be_named_by_path(tmp_path: Path) -> None:
    path = tmp_path / "my-ehr.toml"
    path.write_text(shipped_text())
    assert load_profile(str(path)).name == "my-ehr"


def error_for(text: str) -> str:
    with pytest.raises(ProfileError) as e:
        profile_from_text(text, "mine", "/srv/profiles/mine.toml")
    assert isinstance(e.value, InputError)  # exit code 2 in the CLI
    return str(e.value)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            'name_field = "PID-5"',
            'name_field = "PID5"',
            "[patient] name_field: 'PID5' is not a field reference like PID-3, FT1-25.1 or PV1-7.9.1",
        ),
        (
            'name_field = "PID-5"',
            'name_field = "PID-0"',
            "[patient] name_field: 'PID-0' is not a field reference",
        ),
        (
            'name_style = "components"',
            'name_style = "reversed"',
            "[patient] name_style: must be one of components, family_comma_given, got 'reversed'",
        ),
        (
            '"ADT^A01" = ["patient", "stay"]',
            '"ADT^A01" = ["patient", "stays"]',
            "[messages] ADT^A01: item 2: must be one of patient, stay",
        ),
        (
            '"ADT^A01" = ["patient", "stay"]',
            '"ADT-A01" = ["patient"]',
            "[messages] 'ADT-A01' is not a message type like ADT^A01",
        ),
        (
            "codes = [\n",
            'codes = [\n    "9921-99215",\n',
            "[services] codes: item 1: '9921-99215' is not a 5-character code",
        ),
        (
            "codes = [\n",
            'codes = [\n    "99215-99202",\n',
            "[services] codes: item 1: '99215-99202': the range ends before it starts",
        ),
        (
            "accept_unmarked_npi = false",
            'accept_unmarked_npi = "no"',
            "[practitioners] accept_unmarked_npi: must be true or false, got 'no'",
        ),
        (
            "[practitioners.local_ids]\n",
            '[practitioners.local_ids]\nDOC1 = "1234567890"\n',
            "[practitioners] local_ids: DOC1: '1234567890' is not a 10-digit NPI",
        ),
        (
            'given = "given"',
            'given = "yes"',
            "[documents] consent_statuses: given: must be one of given, declined, withdrawn, got 'yes'",
        ),
        (
            'goals = "goals"',
            'goals = "aims"',
            "[documents] care_plan_elements: goals: must be one of problems",
        ),
        (
            "incomplete_statuses = [",
            "incomplete_status = [",
            "[documents] incomplete_status: unknown key",
        ),
        ('retired_field = "MRG-1"\n', "", "[merge] retired_field: required"),
    ],
)
def test_profile_errors_name_the_file_the_key_and_the_reason(
    old: str, new: str, expected: str
) -> None:
    text = shipped_text()
    assert old in text
    message = error_for(text.replace(old, new, 1))
    assert message.startswith("/srv/profiles/mine.toml: invalid mapping profile")
    assert expected in message


def test_every_problem_is_listed_at_once() -> None:
    text = (
        shipped_text()
        .replace('sex_field = "PID-8"', "sex_field = 8")
        .replace("[merge]", "[merger]")
    )
    message = error_for(text)
    assert "[patient] sex_field: must be a string, got 8" in message
    assert "[merger]: unknown section" in message
    assert "[merge]: section is missing" in message


def test_toml_syntax_errors_name_the_file() -> None:
    assert error_for("[profile\n").startswith("/srv/profiles/mine.toml: not valid TOML")


def test_an_unknown_profile_name_lists_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ProfileError,
        match="mapping profile 'athena' not found in .* the shipped profiles \\(ecw-2.3, generic-2.5.1, pmdsoft-2.3",
    ):
        load_profile("athena", tmp_path)
    with pytest.raises(ProfileError, match="use letters, digits"):
        load_profile("my profile!")
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(str(tmp_path / "missing.toml"))


def test_field_references() -> None:
    assert parse_ref("PID-3") == FieldRef("PID", 3)
    assert parse_ref("PV1-7.9.1") == FieldRef("PV1", 7, 9, 1)
    assert str(parse_ref("FT1-25.1")) == "FT1-25.1"


def test_mapping_check_runs_without_an_instance(tmp_path) -> None:
    """An interface analyst can check messages before any instance exists (shipped profiles, UTC)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "hl7" / "adt_a04_lf.hl7"
    cli = Path(sys.executable).parent / "ccm-connector"
    env = {k: v for k, v in os.environ.items() if k != "CCM_CONNECTOR_CONFIG"}
    out = subprocess.run([str(cli), "mapping", "check", str(fixture), "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"action": "mapped"' in out.stdout and "no configuration" in out.stderr
    bad = subprocess.run([str(cli), "mapping", "check", str(fixture), "--profile", "no-such-profile", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert bad.returncode == 2
