"""`ccm-connector run`: one instance per store, SIGTERM finishes the job in hand and exits 0,
SIGKILL at any point loses nothing (the next start resumes the interrupted job).

The service runs for real in a subprocess (tests/connector/service_driver.py swaps the stages
and the MLLP listener for recorders). Every wait is bounded."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore

from ccm_connector import audit, jobs, service
from ccm_connector.config import load_config
from ccm_connector.instance import with_values
from ccm_connector.store import open_store

DRIVER = Path(__file__).with_name("service_driver.py")
CLI = Path(sys.executable).parent / "ccm-connector"
BOUND = 20.0
ORDER = [
    "inbox",
    "returns_pull",
    "reconcile",
    "dispatch",
    "close_month",
    "queue_export",
    "key_expiry",
    "retention",
]


def wait_for(what: str, predicate: Callable[[], object], timeout: float = BOUND) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Run:
    """One `ccm-connector run` process through the driver."""

    def __init__(self, instance: Path, marks: Path, block: str = "", listener: str = "ok") -> None:
        self.instance, self.marks = instance, marks
        self.stderr_path = marks / f"stderr-{time.monotonic_ns()}.log"
        env = {
            **os.environ,
            "CCM_TEST_MARKS": str(marks),
            "CCM_TEST_BLOCK": block,
            "CCM_TEST_LISTENER": listener,
        }
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), "--config", str(instance / "connector.toml"), "run"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )

    def events(self) -> list[dict]:
        out = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def logged(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def wait_logged(self, name: str) -> None:
        wait_for(f"log event {name}", lambda: self.logged(name) or self.proc.poll() is not None)
        assert self.logged(name), self.stderr_path.read_text()[-3000:]

    def exit_code(self) -> int:
        try:
            return self.proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=BOUND)
            raise AssertionError("the service did not exit") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.exit_code()


@pytest.fixture
def instance(local_instance: Path) -> Path:
    config = local_instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("schedule", "run_at_start"): "true"}))
    return local_instance


@pytest.fixture
def marks(instance: Path) -> Path:
    folder = instance / "marks"
    folder.mkdir()
    return folder


@pytest.fixture
def runs() -> list[Run]:
    started: list[Run] = []
    yield started
    for run in started:  # never leave a service behind, whatever the test did
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=BOUND)


def job_rows(instance: Path) -> list[dict]:
    conn = open_store(load_config(instance / "connector.toml").store.path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM job_run ORDER BY id")]
    finally:
        conn.close()


def started(marks: Path, job: str) -> bool:
    return (marks / f"{job}.started").exists()


# --- the lock ------------------------------------------------------------------------------------


def test_the_lock_names_its_holder(instance: Path) -> None:
    cfg = load_config(instance / "connector.toml")
    lock = service.acquire_lock(cfg, now=dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC))
    try:
        with pytest.raises(service.AlreadyRunning) as e:
            service.acquire_lock(cfg)
        assert str(e.value) == (
            f"already running: pid {os.getpid()} on {socket.gethostname()} since 2026-11-02T08:00:00+00:00 "
            f"(lock {service.lock_path(cfg)})"
        )
    finally:
        lock.release()
    service.acquire_lock(cfg).release()  # free again once released


def test_a_second_run_says_who_holds_the_store_and_exits_1(
    instance: Path, marks: Path, runs: list[Run]
) -> None:
    first = Run(instance, marks)
    runs.append(first)
    first.wait_logged("service.started")
    second = subprocess.run(
        [str(CLI), "--config", str(instance / "connector.toml"), "run"],
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert second.returncode == 1
    assert (
        f"already running: pid {first.proc.pid} on {socket.gethostname()} since " in second.stderr
    )
    assert f"(lock {instance / 'data' / 'connector.db.lock'})" in second.stderr
    assert first.proc.poll() is None  # the holder is undisturbed
    assert first.stop() == 0


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_finishes_the_job_in_hand_starts_no_other_and_exits_0(
    instance: Path, marks: Path, runs: list[Run]
) -> None:
    run = Run(instance, marks, block="queue_export")
    runs.append(run)
    wait_for(
        "queue_export to start",
        lambda: started(marks, "queue_export") or run.proc.poll() is not None,
    )
    run.wait_logged("service.started")
    run.proc.send_signal(signal.SIGTERM)
    run.wait_logged("service.stopping")
    assert run.proc.poll() is None  # still finishing the job in hand
    (marks / "release").touch()
    assert run.exit_code() == 0

    rows = job_rows(instance)
    # Jobs run one at a time in list order; queue_export was in hand, the two after it never started.
    assert [r["job"] for r in rows] == ORDER[: ORDER.index("queue_export") + 1]
    assert all(r["outcome"] == "ok" and r["finished_at"] for r in rows)
    assert not started(marks, "key_expiry") and not started(marks, "retention")
    assert (marks / "listener.stopped").exists()
    assert run.logged("service.stopped")


def test_the_service_exits_1_when_its_listener_fails(
    instance: Path, marks: Path, runs: list[Run]
) -> None:
    run = Run(instance, marks, listener="fail")
    runs.append(run)
    assert run.exit_code() == 1
    assert run.logged("service.listener_failed") and run.logged("service.stopped")
    assert all(r["finished_at"] for r in job_rows(instance))


# --- SIGKILL and resume --------------------------------------------------------------------------


@pytest.mark.parametrize("job", ORDER)
def test_sigkill_mid_job_then_the_next_start_resumes_it(
    instance: Path, marks: Path, runs: list[Run], job: str
) -> None:
    killed = Run(instance, marks, block=job)
    runs.append(killed)
    wait_for(f"{job} to start", lambda: started(marks, job) or killed.proc.poll() is not None)
    killed.proc.send_signal(signal.SIGKILL)
    assert killed.exit_code() == -signal.SIGKILL
    open_rows = [r for r in job_rows(instance) if r["finished_at"] is None]
    assert [r["job"] for r in open_rows] == [job]
    interrupted_id = open_rows[0]["id"]

    # Restart without run_at_start: the interrupted job runs again because it was interrupted.
    config = instance / "connector.toml"
    config.write_text(with_values(config.read_text(), {("schedule", "run_at_start"): "false"}))
    (marks / f"{job}.done").unlink(missing_ok=True)
    resumed = Run(instance, marks)
    runs.append(resumed)

    def finished_again() -> bool:
        return any(
            r["job"] == job and r["id"] > interrupted_id and r["outcome"] == "ok"
            for r in job_rows(instance)
        )

    wait_for(f"{job} to be resumed", lambda: finished_again() or resumed.proc.poll() is not None)
    assert finished_again(), resumed.stderr_path.read_text()[-3000:]
    assert resumed.stop() == 0

    rows = {r["id"]: r for r in job_rows(instance)}
    assert rows[interrupted_id]["outcome"] == "interrupted"
    assert all(r["finished_at"] for r in rows.values())
    assert (marks / f"{job}.done").exists()
    cfg = load_config(config)
    conn = open_store(cfg.store.path)
    assert [
        r["subject"]
        for r in conn.execute("SELECT subject FROM audit_event WHERE kind = 'job.interrupted'")
    ] == [job]
    assert audit.verify(conn, audit.read_key(cfg.audit.key_file)).ok


# --- the scheduler as configured -----------------------------------------------------------------


def test_the_scheduler_uses_memory_one_worker_and_explicit_misfire_rules(instance: Path) -> None:
    cfg = load_config(instance / "connector.toml")
    now = dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC)
    scheduler = service.build_scheduler(
        cfg, lambda job: None, {"inbox": "poll", "retention": "missed"}, now
    )
    assert isinstance(scheduler._jobstores["default"], MemoryJobStore)
    executor = scheduler._executors["default"]
    assert isinstance(executor, ThreadPoolExecutor) and executor._pool._max_workers == 1
    scheduler.start(paused=True)
    try:
        by_id = {j.id: j for j in scheduler.get_jobs()}
        assert set(by_id) == set(ORDER)
        spec = jobs.jobs_by_id(cfg)
        for job_id, job in by_id.items():
            assert job.coalesce is True and job.max_instances == 1
            assert job.misfire_grace_time == spec[job_id].misfire_grace_seconds
            assert str(job.trigger) == str(spec[job_id].trigger)
        assert by_id["inbox"].next_run_time == now
        assert by_id["retention"].next_run_time == now + dt.timedelta(
            milliseconds=ORDER.index("retention")
        )
        assert by_id["queue_export"].next_run_time > now
    finally:
        scheduler.shutdown(wait=False)
