"""Running one stage over a large batch in one process."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a batch.

    A month of 10,000 patients (or a rules file of 10,000 patient-months) allocates millions of
    small acyclic objects; the collector's repeated passes over an ever larger heap make the cost
    per patient grow with the batch and free nothing (reference counting frees them).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
