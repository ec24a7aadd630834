"""Test harness for test_service.py: `ccm-connector ARGS` with every stage and the MLLP listener
replaced by recorders, so the real service (lock, scheduler, signals, job_run, audit) can be
driven through start, SIGTERM and SIGKILL without an EHR, an SFTP server or gpg.

Environment:
  CCM_TEST_MARKS     folder for marker files: <job>.started, <job>.done, listener.started/stopped
  CCM_TEST_BLOCK     job id whose stage waits until the file CCM_TEST_MARKS/release exists
  CCM_TEST_LISTENER  "ok" (serve until stopped) or "fail" (raise at start)
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import types
from pathlib import Path

MARKS = Path(os.environ["CCM_TEST_MARKS"])
BLOCK = os.environ.get("CCM_TEST_BLOCK", "")
LISTENER = os.environ.get("CCM_TEST_LISTENER", "ok")
BOUND = 30.0  # no wait in here is unbounded


def mark(name: str) -> None:
    with open(MARKS / name, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")


def fake_stage(job_id: str):
    def stage(*args: object) -> object:
        mark(f"{job_id}.started")
        if job_id == BLOCK:
            deadline = time.monotonic() + BOUND
            while not (MARKS / "release").exists():
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never released the stage")
                time.sleep(0.01)
        mark(f"{job_id}.done")
        return [] if job_id == "key_expiry" else {"items": 1}

    return stage


def fake_listen(cfg: object, stop: threading.Event) -> None:
    mark("listener.started")
    if LISTENER == "fail":
        raise OSError("address already in use")
    stop.wait(BOUND)
    mark("listener.stopped")


def module(name: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        fake = types.ModuleType(name)
        sys.modules[name] = fake
        return fake


def install() -> None:
    from ccm_connector import jobs, service

    for job_id, (module_name, function) in jobs.STAGES.items():
        setattr(module(module_name), function, fake_stage(job_id))
    module_name, function = service.LISTENER
    setattr(module(module_name), function, fake_listen)


if __name__ == "__main__":
    install()
    from ccm_connector.cli import main

    sys.exit(main(sys.argv[1:]))
