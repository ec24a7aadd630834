from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccm_connector.sftp import naming


def test_queue_and_return_names_round_trip():
    name = naming.queue_name("LOCALDEMO", 7)
    assert name == "wq_LOCALDEMO_000007.pgp"
    assert naming.parse_queue_name(name) == naming.QueueName("LOCALDEMO", 7)
    name = naming.return_name("PRACTICE_01", "R-2026-12-04-1")
    assert naming.parse_return_name(name) == naming.ReturnName("PRACTICE_01", "R-2026-12-04-1")


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../rt_LOCALDEMO_R1.pgp", "path separator"),
        ("rt_LOCALDEMO_..R1.pgp", "'..'"),
        ("rt_LOCALDEMO_R1.pgp/..", "path separator"),
        ("..", "'..'"),
        ("rt_LOCALDEMO\\R1.pgp", "path separator"),
        ("rt_LOCALDEMO_R1\n.pgp", "control character"),
        ("rt_LOCALDEMO_R1\x00.pgp", "control character"),
        ("rt_LOCALDEMO_R\u202e1.pgp", "control character"),  # right-to-left override
        (".rt_LOCALDEMO_R1.pgp", "starts with"),
        ("-rt_LOCALDEMO_R1.pgp", "starts with"),
        ("", "empty"),
        ("r" * 200, "longer"),
    ],
)
def test_unsafe_names_are_refused_with_their_reason(name, reason):
    with pytest.raises(naming.UnsafeName, match=reason):
        naming.parse_return_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "rt_LOCALDEMO_R1.xml",
        "wq_LOCALDEMO_000001.pgp",
        "rt_LOCALDEMO_R 1.pgp",
        "rt_LOCALDEMO_.pgp",
        "RT_LOCALDEMO_R1.pgp",
    ],
)
def test_names_outside_the_pattern_are_refused(name):
    with pytest.raises(naming.UnsafeName, match="not a return file name"):
        naming.parse_return_name(name)


def test_temp_names_are_in_flight_and_never_match_a_pattern():
    temp = naming.temp_name("rt_LOCALDEMO_R1.pgp")
    assert naming.is_in_flight(temp)
    with pytest.raises(naming.UnsafeName):
        naming.parse_return_name(temp)
    assert not naming.is_in_flight("rt_LOCALDEMO_R1.pgp")


def test_shown_is_printable_and_bounded():
    assert naming.shown("a\nb/../c") == "a\\nb/../c"
    assert len(naming.shown("x" * 1000)) <= naming.MAX_NAME + 3


@given(st.text(min_size=1, max_size=80))
def test_a_safe_name_is_one_plain_path_component(name):
    try:
        naming.check_safe(name)
    except naming.UnsafeName:
        return
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(ord(c) >= 32 and ord(c) != 127 for c in name)
    assert not name.startswith(".")
