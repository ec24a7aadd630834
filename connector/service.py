"""`ccm-connector run`: the MLLP listener plus the scheduled jobs, one instance per store.

- A lock beside the store (`fcntl.flock`, holding pid, host and start time): a second `run`
  says who holds it and exits 1. The kernel drops the lock when the process dies, however.
- At start, job_run rows a killed process left open are marked 'interrupted' and their jobs
  run first; polls run once; a daily/monthly job whose time passed while nothing ran runs too.
- APScheduler 3.x BackgroundScheduler with the in-memory job store, rebuilt from the
  configuration at every start (integration.md R-B16: persistent stores pickle). One worker
  thread: jobs run one at a time, in the order of `jobs.job_list`, so reconcile never races
  month close on the same rows; the MLLP listener runs beside them in its own thread.
- SIGTERM/SIGINT: no new job starts, the job in hand finishes, the listener stops, exit 0.
  SIGKILL loses nothing: every stage keeps its pending work in the store.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import importlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from . import audit, jobs, logs
from .config import Config
from .errors import InputError, OperationalError
from .store import make_private_dir, open_store

log = logs.get_logger("service")

# The MLLP listener's entry point (intake): serve_mllp(cfg, stop: threading.Event) binds, serves
# until `stop` is set, closes and returns; it runs in its own thread, so it installs no signal
# handlers. An exception (e.g. the port is taken) ends the service with exit 1.
LISTENER = ("ccm_connector.intake", "serve_mllp")
POLL_SECONDS = 0.2


class AlreadyRunning(OperationalError):
    """Another `run` holds this store's lock."""


# --- the instance lock ---------------------------------------------------------------------------


def lock_path(cfg: Config) -> Path:
    return cfg.store.path.with_name(cfg.store.path.name + ".lock")


@dataclass
class Lock:
    path: Path
    fd: int

    def release(self) -> None:
        os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def acquire_lock(cfg: Config, now: dt.datetime | None = None) -> Lock:
    """Take the store's lock or raise AlreadyRunning naming its holder. The file is never deleted
    (deleting a flock file lets two processes lock two different files)."""
    path = lock_path(cfg)
    make_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by child processes
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0))
        os.close(fd)
        raise AlreadyRunning(
            f"already running: pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"since {holder.get('since', '?')} (lock {path})"
        ) from None
    since = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, body + b"\n", 0)
    os.fsync(fd)
    return Lock(path, fd)


def _holder(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8", "replace") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --- the scheduler -------------------------------------------------------------------------------


def build_scheduler(
    cfg: Config, run: Callable[[jobs.Job], None], due: dict[str, str], now: dt.datetime
) -> BackgroundScheduler:
    """The scheduler, not started: every job of `jobs.job_list` with explicit misfire grace,
    coalescing and a single instance; jobs in `due` first run at `now` (in list order)."""
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=cfg.zone,
    )
    for i, job in enumerate(jobs.job_list(cfg)):
        first = {"next_run_time": now + dt.timedelta(milliseconds=i)} if job.id in due else {}
        scheduler.add_job(
            run,
            trigger=job.trigger,
            args=(job,),
            id=job.id,
            name=job.id,
            misfire_grace_time=job.misfire_grace_seconds,
            coalesce=True,
            max_instances=1,
            **first,
        )
    return scheduler


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()  # set by SIGTERM/SIGINT; also tells the listener to stop
        self.stopping = (
            threading.Event()
        )  # set once shutdown began: jobs not yet started are skipped
        self.listener_error = False

    def run_scheduled(self, job: jobs.Job) -> None:
        if self.stopping.is_set():
            logs.event(log, "job.skipped", job=job.id, reason="service stopping")
            return
        try:
            jobs.run_job(self.cfg, job.id, runner="service")
        except Exception:  # noqa: BLE001 - the store or audit key failed; keep serving
            logs.event(log, "job.unrecorded", level=logging.ERROR, exc_info=True, job=job.id)

    def on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            logs.event(
                log,
                "job.missed",
                level=logging.WARNING,
                job=event.job_id,
                scheduled=str(getattr(event, "scheduled_run_time", "")),
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            logs.event(log, "job.still_running", level=logging.WARNING, job=event.job_id)
        else:
            logs.event(
                log,
                "job.error",
                level=logging.ERROR,
                job=event.job_id,
                error_type=type(getattr(event, "exception", None)).__name__,
            )

    def on_signal(self, signum: int, frame: Any) -> None:
        self.stop.set()  # the main thread only polls this flag, never waits on it

    def listen(self, listen: Callable[[Config, threading.Event], None]) -> None:
        try:
            listen(self.cfg, self.stop)
        except Exception:  # noqa: BLE001
            self.listener_error = True
            logs.event(log, "service.listener_failed", level=logging.ERROR, exc_info=True)

    def start_listener(self) -> threading.Thread | None:
        module_name, function = LISTENER
        try:
            listen = getattr(importlib.import_module(module_name), function)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            listen = None
        except AttributeError:
            listen = None
        if listen is None:
            logs.event(
                log,
                "service.listener_not_built",
                level=logging.WARNING,
                entry=f"{module_name}.{function}",
            )
            return None
        thread = threading.Thread(
            target=self.listen, args=(listen,), name="mllp-listener", daemon=True
        )
        thread.start()
        return thread

    def run(self) -> int:
        cfg = self.cfg
        try:
            key = audit.read_key(cfg.audit.key_file)
        except (OSError, ValueError) as e:
            raise InputError(f"[audit] key_file: {e}") from None
        lock = acquire_lock(cfg)
        previous = {s: signal.signal(s, self.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            now = dt.datetime.now(dt.UTC)
            conn = open_store(cfg.store.path)
            try:
                interrupted = jobs.mark_interrupted(conn, key, now)
                due = jobs.due_at_start(cfg, conn, now)
            finally:
                conn.close()
            for run_id, job_id in interrupted:
                logs.event(log, "job.interrupted", level=logging.WARNING, job=job_id, run=run_id)
            _quiet_apscheduler()
            scheduler = build_scheduler(cfg, self.run_scheduled, due, now)
            scheduler.add_listener(
                self.on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
            )
            scheduler.start()
            listener = self.start_listener()
            logs.event(
                log,
                "service.started",
                pid=os.getpid(),
                jobs=len(scheduler.get_jobs()),
                due_at_start=",".join(due),
                listener=listener is not None,
            )
            while not self.stop.is_set():
                if listener is not None and not listener.is_alive():
                    self.listener_error = True
                    logs.event(log, "service.listener_stopped", level=logging.ERROR)
                    break
                time.sleep(POLL_SECONDS)
            logs.event(
                log,
                "service.stopping",
                reason="listener stopped" if self.listener_error else "signal",
            )
            self.stopping.set()
            self.stop.set()
            scheduler.shutdown(wait=True)  # the job in hand finishes; queued ones are skipped
            if listener is not None:
                listener.join(timeout=30)
            logs.event(log, "service.stopped", exit=1 if self.listener_error else 0)
            return 1 if self.listener_error else 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            lock.release()


def _quiet_apscheduler() -> None:
    # Job events are logged by Service.on_event as JSON lines; APScheduler's own plain-text
    # lines would break the log format (and an exception message may quote input).
    aps = logging.getLogger("apscheduler")
    aps.addHandler(logging.NullHandler())
    aps.propagate = False


def run_service(cfg: Config) -> int:
    return Service(cfg).run()
