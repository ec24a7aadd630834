"""The two kinds of failure the CLI distinguishes, and the exit codes they map to."""

from __future__ import annotations


class InputError(Exception):
    """Bad input or configuration: the message says what and where. Exit 2."""

    exit_code = 2


class OperationalError(Exception):
    """Something outside the input went wrong (a peer, a disk, a lock). Exit 1."""

    exit_code = 1
