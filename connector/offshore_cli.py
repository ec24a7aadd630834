"""`ccm-offshore`: the offshore team's side of the secure drop."""

from __future__ import annotations

import argparse
import sys

from .errors import NotBuiltError, OperationalError

PROG = "ccm-offshore"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Pull work queues and push signed returns.")
    parser.add_argument("--config", help="offshore configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("pull", help="download, verify, decrypt and validate the work queue into a folder")
    p.add_argument("--into", default="work")
    p = sub.add_parser("validate", help="check a return document against its schema")
    p.add_argument("file")
    p = sub.add_parser("push", help="validate, sign, encrypt and upload a return")
    p.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        raise NotBuiltError(f"`{PROG} {args.command}` is not built yet in this release (tracked as issue 5)")
    except OperationalError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
