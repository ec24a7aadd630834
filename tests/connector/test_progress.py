"""progress(): a redrawn bar on a terminal, plain periodic lines anywhere else."""

from __future__ import annotations

import io

from ccm_connector.progress import bar, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_each_tenth_and_at_the_end() -> None:
    out = io.StringIO()
    items = list(progress(range(50), total=50, label="ingest", stream=out))
    assert items == list(range(50))  # every item passes through, in order
    lines = out.getvalue().splitlines()
    assert lines == [f"ingest: {n}/50 ({n * 2}%)" for n in range(5, 50, 5)] + [
        "ingest: done, 50/50"
    ]
    assert "\r" not in out.getvalue()


def test_plain_lines_every_step_when_the_total_is_unknown() -> None:
    out = io.StringIO()
    list(progress(iter(range(25)), label="export", stream=out, step=10))
    assert out.getvalue().splitlines() == ["export: 10", "export: 20", "export: done, 25"]


def test_a_bar_is_redrawn_in_place_on_a_terminal() -> None:
    out = Terminal()
    list(progress(range(200), total=200, label="close", stream=out))
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip("\n").split("\r")[-1] == "close [" + "#" * 30 + "] 100%  200/200"


def test_the_bar_itself() -> None:
    assert bar("x", 5, 20) == "x [" + "#" * 7 + "." * 23 + "]  25%  5/20"
    assert bar("x", 3, None) == "x 3"
    assert bar("x", 0, 0) == "x 0"


def test_an_empty_iterable_still_ends_cleanly() -> None:
    out = io.StringIO()
    assert list(progress([], total=0, label="ingest", stream=out)) == []
    assert out.getvalue() == "ingest: done, 0\n"
