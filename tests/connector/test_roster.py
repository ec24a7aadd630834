"""The staff roster CSV: every problem named with file, line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccm_connector.errors import InputError
from ccm_connector.roster import COLUMNS, load_roster

HEADER = ",".join(COLUMNS)


def roster(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_the_roster_template_loads(tmp_path: Path) -> None:
    from ccm_connector.instance import template

    path = tmp_path / "roster.csv"
    path.write_text(template("roster.example.csv"))
    staff = load_roster(path)
    assert staff["RN7"].role == "clinical" and staff["RN7"].supervisor_npi == "1234567893"
    assert staff["OFF1"].offshore_account and staff["OFF1"].location == "IN"


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ("X1,N,RN,nurse,US,1234567893,,false,false", ":2 role: must be one of clinical, practitioner, non_clinical"),
        ("X1,N,RN,clinical,USA,1234567893,,false,false", ":2 location: must be a two-letter country code"),
        ("X1,N,RN,clinical,US,1234567890,,false,false", ":2 supervisor_npi: not a valid NPI"),
        ("X1,N,MD,practitioner,US,,,false,false", ":2 npi: required for a practitioner"),
        ("X1,N,RN,clinical,US,,,maybe,false", ":2 excluded: must be true or false"),
        (",N,RN,clinical,US,,,false,false", ":2 staff_id: required"),
    ],
)
def test_a_bad_row_is_named_with_its_line(tmp_path: Path, row: str, named: str) -> None:
    with pytest.raises(InputError, match=named.replace("(", r"\(")):
        load_roster(roster(tmp_path, row))


def test_a_duplicate_id_and_a_missing_column(tmp_path: Path) -> None:
    row = "X1,N,RN,clinical,US,1234567893,,false,false"
    with pytest.raises(InputError, match=":3 staff_id: 'X1' appears twice"):
        load_roster(roster(tmp_path, row, row))
    path = tmp_path / "r.csv"
    path.write_text("staff_id,name\nX1,N\n")
    with pytest.raises(InputError, match="missing column"):
        load_roster(path)
