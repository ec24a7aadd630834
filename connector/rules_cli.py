"""`ccm-connector rules check FILE|-`: the rules engine's JSON interface (spec/rules-check.md).

Reads one facts object or a JSON array of them from FILE (or stdin for "-"), prints the decision
(or an array of decisions, matching the input) and exits 0, billable or not. Any invalid input
exits 2 with one message on stderr naming the file position or the JSON path, and nothing on
stdout. Needs no configuration file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .batches import gc_paused
from .errors import InputError
from .facts import Facts, FactsError, facts_from_json
from .rules import RuleSet, RuleSetNotFound, decide, rule_set_for

STDIN_NAME = "<stdin>"


class CheckInputError(InputError):
    """Input that cannot be judged; the message says what and where."""


def rules_check(source: str, stdout: TextIO, stderr: TextIO, stdin: TextIO | None = None) -> int:
    """Run `rules check` on FILE or "-" (stdin); returns the exit code (0, or 2 for bad input)."""
    with gc_paused():
        try:
            document = parsed_json(*source_text(source, sys.stdin if stdin is None else stdin))
            output = decisions_json(document)
        except (CheckInputError, FactsError) as e:
            print(e, file=stderr)
            return 2
        text = json.dumps(output, indent=2, ensure_ascii=False)
    stdout.write(text + "\n")
    return 0


def source_text(source: str, stdin: TextIO) -> tuple[str, str]:
    """(name, text) of FILE, or of stdin for "-"."""
    if source == "-":
        name = STDIN_NAME
        stream = getattr(stdin, "buffer", None)
        data: bytes | str = stream.read() if stream is not None else stdin.read()
    else:
        name = source
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise CheckInputError(f"{name}: cannot read: {e.strerror or e}") from None
    if isinstance(data, str):
        return name, data
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CheckInputError(f"{name}: not UTF-8 text (byte {e.start})") from None


def parsed_json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckInputError(f"{name}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer too long to convert, deep nesting
        raise CheckInputError(f"{name}: invalid JSON: {e}") from None


def decisions_json(document: Any) -> Any:
    """The decision JSON for a facts object, or a list of them for an array."""
    if isinstance(document, list):
        judged = [judged_facts(item, f"facts[{i}]") for i, item in enumerate(document)]
        return [decide(facts, rule_set).to_json() for facts, rule_set in judged]
    if isinstance(document, dict):
        facts, rule_set = judged_facts(document, "facts")
        return decide(facts, rule_set).to_json()
    raise CheckInputError("facts: must be an object or an array of objects")


def judged_facts(obj: Any, path: str) -> tuple[Facts, RuleSet]:
    """Validated facts and the rule set for their month; every input is checked before output."""
    facts = facts_from_json(obj, path)
    try:
        return facts, rule_set_for(facts.month)
    except RuleSetNotFound as e:
        raise CheckInputError(f"{path}.month: {e}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ccm_connector.rules_cli FILE|-", file=sys.stderr)
        return 2
    return rules_check(args[0], sys.stdout, sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
