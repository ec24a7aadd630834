"""MLLP intake throughput on one connection, in one run, for a feed of CCM touchpoints (MDM^T02):

- bare: the MLLP listener with a receiver that only stores the raw frame (one durable SQLite
  commit per message, WAL + synchronous=FULL) and answers a fixed AA;
- full: the real intake stage: read, dedupe, store raw, map with generic-2.5.1, store the patient
  and touchpoint records and the audit event in the same transaction, commit, then build the ACK.

The listener runs in a child process, the sender (our MLLP client, one message at a time, each
waiting for its ACK) in this one. Also printed, in-process and without I/O, the cost of reading
and mapping a message with our reader against python-hl7's parser (the reason our reader exists).

    .venv/bin/python bench/bench_intake.py [--messages 4200] [--rounds 8]

Targets (issue 4): full >= 1,000 messages/s and >= 40% of bare. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo


def touchpoint(n: int) -> bytes:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|EHR|CLINIC|CCMCONNECTOR|PRACTICE|20261103103000-0600||MDM^T02^MDM_T02|BENCH{n:08d}|P|2.5.1|||AL|NE||UNICODE UTF-8",
                "EVN|T02|20261103103000-0600",
                f"PID|1||MRN{n % 500:05d}^^^CLINIC^MR||TESTPATIENT^BENCH||19480212|F",
                "PV1|1|O|CLINIC||||1234567893^DOCTOR^DORA^^^^^^NPI",
                f"TXA|1|CCM-TOUCH|TX|20261103101500-0600|RN{n % 7:03d}^NURSE^NORA^^^^^^ROSTER||20261103103000-0600|||||TP{n:08d}||||AU",
                f"OBX|1|NM|CCM-MIN^Minutes^L||{5 + n % 25}|min",
                "OBX|2|CE|CCM-ACT^Activity^L||MEDREC^Medication reconciliation^L",
                "OBX|3|TX|CCM-NOTE^Summary^L||Reviewed the medication list by phone and sent a refill request.",
            ]
        )
        + "\r"
    ).encode()


class BareReceiver:
    """Stores the frame durably and answers AA: the floor any intake must stand on."""

    def __init__(self, path: Path) -> None:
        from ccm_connector.store import open_store

        self.conn = open_store(path)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bare (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)"
        )

    def frame(self, data: bytes, peer: str) -> bytes | None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO bare (raw) VALUES (?)", (data,))
        self.conn.execute("COMMIT")
        control = data.split(b"\r", 1)[0].split(b"|")[9]
        return b"MSH|^~\\&|CCMCONNECTOR||EHR||20261103||ACK|A|P|2.5.1\rMSA|AA|" + control + b"\r"

    def junk(self, data: bytes, peer: str, reason: str) -> None:
        pass

    def oversize(self, head: bytes, size: int, peer: str) -> bytes:
        return b""

    def event(self, name: str, peer: str, **fields: object) -> None:
        pass


def serve(kind: str, folder: str, conn: mp.connection.Connection) -> None:
    from ccm_connector import intake, logs
    from ccm_connector.hl7 import mllp
    from ccm_connector.mappings.profile import load_profile
    from ccm_connector.store import open_store

    logs.setup_logging("error")
    if kind == "bare":
        receiver = BareReceiver(Path(folder) / "bare.db")
    else:
        stage = intake.Intake(
            open_store(Path(folder) / "full.db"),
            load_profile("generic-2.5.1"),
            ZoneInfo("America/Chicago"),
            b"k" * 32,
        )
        receiver = intake.MllpReceiver(stage, 1_048_576)  # type: ignore[assignment]

    async def main() -> None:
        server = mllp.Server(receiver, "127.0.0.1", 0, mllp.Limits())  # type: ignore[arg-type]
        conn.send(await server.start())
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until told to stop
        await server.close(grace=1)

    asyncio.run(main())


async def alternate(
    ports: dict[str, int], messages: list[bytes], rounds: int
) -> dict[str, list[float]]:
    """One connection per loop; the loops take turns, chunk by chunk, so that load from anything
    else on the machine falls on both alike. Returns messages/s per chunk for each loop."""
    from ccm_connector.hl7 import mllp

    rates: dict[str, list[float]] = {kind: [] for kind in ports}
    clients = {kind: mllp.Client("127.0.0.1", port, timeout=30) for kind, port in ports.items()}
    for client in clients.values():
        await client.connect()
    try:
        for client in clients.values():  # warm-up, not timed
            for m in messages[:200]:
                await client.send(m)
        body = messages[200:]
        size = max(len(body) // rounds, 1)
        for r in range(rounds):
            chunk = body[r * size : (r + 1) * size]
            for kind, client in clients.items():
                start = time.perf_counter()
                for m in chunk:
                    reply = await client.send(m)
                    if b"MSA|AA|" not in reply:
                        raise SystemExit(f"{kind}: not accepted: {reply[:200]!r}")
                rates[kind].append(len(chunk) / (time.perf_counter() - start))
    finally:
        for client in clients.values():
            await client.close()
    return rates


def run(messages: list[bytes], folder: str, rounds: int) -> dict[str, list[float]]:
    ctx = mp.get_context("spawn")
    pipes, procs, ports = {}, [], {}
    try:
        for kind in ("bare", "full"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(kind, folder, child), daemon=True)
            proc.start()
            pipes[kind] = parent
            procs.append(proc)
            if not parent.poll(30):
                raise SystemExit(f"{kind} listener did not start")
            ports[kind] = parent.recv()
        return asyncio.run(alternate(ports, messages, rounds))
    finally:
        for parent in pipes.values():
            parent.send("stop")
        for proc in procs:
            proc.join(10)


def parse_costs(messages: list[bytes]) -> tuple[float, float]:
    """Messages/s for our reader + mapping, and for python-hl7's parse alone (no I/O)."""
    import hl7 as python_hl7
    from ccm_connector.hl7 import reader
    from ccm_connector.mappings.apply import apply
    from ccm_connector.mappings.profile import load_profile

    profile, zone = load_profile("generic-2.5.1"), ZoneInfo("America/Chicago")
    sample = messages[:2000]
    start = time.perf_counter()
    for m in sample:
        apply(reader.read_message(m), profile, zone)
    ours = len(sample) / (time.perf_counter() - start)
    texts = [m.decode() for m in sample]
    start = time.perf_counter()
    for t in texts:
        python_hl7.parse(t)
    theirs = len(sample) / (time.perf_counter() - start)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=4200, help="messages per loop (the first 200 warm up)"
    )
    parser.add_argument("--rounds", type=int, default=8, help="chunks each loop takes in turn")
    args = parser.parse_args()
    messages = [touchpoint(n) for n in range(max(args.messages, 200 + args.rounds))]
    with tempfile.TemporaryDirectory(prefix="ccm-bench-") as folder:
        rates = run(messages, folder, args.rounds)
        db = sqlite3.connect(Path(folder) / "full.db")
        stored = db.execute("SELECT count(*) FROM touchpoint").fetchone()[0]
        db.close()
    bare, full = statistics.median(rates["bare"]), statistics.median(rates["full"])
    ours, theirs = parse_costs(messages)
    timed = len(messages) - 200
    print(
        f"MLLP intake on one connection per loop, ACK after a durable commit; {timed} timed messages per loop"
    )
    print(f"in {args.rounds} alternating chunks after 200 warm-up; median of the chunks (min-max):")
    print(
        f"  bare loop (store the raw frame only):             {bare:6.0f} messages/s ({min(rates['bare']):.0f}-{max(rates['bare']):.0f})"
    )
    print(
        f"  full intake (read, dedupe, map, records, audit):  {full:6.0f} messages/s ({min(rates['full']):.0f}-{max(rates['full']):.0f}); {stored} touchpoints stored"
    )
    print(f"  full / bare: {full / bare:.0%}   (targets: >= 1000 messages/s and >= 40% of bare)")
    print("Reading and mapping one MDM^T02 touchpoint, in-process, no I/O:")
    print(f"  our reader + mapping:        {ours:6.0f} messages/s")
    print(f"  python-hl7 hl7.parse alone:  {theirs:6.0f} messages/s")


if __name__ == "__main__":
    main()
