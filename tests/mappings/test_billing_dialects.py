"""Billing system dialects: data files, checked on load with file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm_connector.errors import InputError
from ccm_connector.mappings.billing_dialects import billing_dialect


def test_the_shipped_dialects_load() -> None:
    assert billing_dialect("generic-2.5.1").cpt_in_ft1_7
    ecw = billing_dialect("eclinicalworks-2.3")
    assert (ecw.version, ecw.cpt_in_ft1_7, ecw.cpt_in_ft1_25, ecw.date_of_service) == ("2.3", False, True, "TS")


def test_a_practice_copy_in_profile_dir_wins(tmp_path: Path) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "generic-2.5.1.toml").write_text('name = "mine"\ndate_of_service = "TS"\n')
    assert billing_dialect("generic-2.5.1", tmp_path).date_of_service == "TS"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('name = "x"\ncpt_in_ft1_7 = "yes"\n', "cpt_in_ft1_7: must be bool"),
        ('name = "x"\ndate_of_service = "DT"\n', "date_of_service: must be one of DR, TS"),
        ('name = "x"\nfield = 1\n', "field: unknown key"),
        ('date_of_service = "DR"\n', "name: required"),
        ('name = "x"\ncpt_in_ft1_7 = false\ncpt_in_ft1_25 = false\n', "the code must go in FT1-7 or FT1-25"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_a_bad_dialect_names_the_file_and_key(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "bad.toml").write_text(text)
    with pytest.raises(InputError) as e:
        billing_dialect("bad", tmp_path)
    assert "bad.toml" in str(e.value) and named in str(e.value)


def test_an_unknown_dialect() -> None:
    with pytest.raises(InputError, match="no billing dialect named 'nope'"):
        billing_dialect("nope")
