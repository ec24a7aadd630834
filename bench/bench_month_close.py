"""Month-close cost by practice size: reconcile + rules, then release (DFT^P03, CSV, packages).

Prints, for each size, the seconds and the cost per patient of each phase (reconcile: the best
of five runs, since other work on the machine only ever adds time), and the
reconcile + rules rate in patient-months per second (target: 2,000/s or more on 2 cores) for the
whole stage (store reads, reconciliation, facts, rules, review packets, store writes) as the
service runs it (one process per usable CPU) and, measured in the same run for comparison, in
one process and for the pure cores alone; then the ratio of the per-patient cost at the largest
size to the smallest (target: within 20%).
Usage: bench/bench_month_close.py [SIZES]   e.g. 1000,10000,50000 (the default)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from ccm_connector.billing import close_month
from ccm_connector.config import load_config
from ccm_connector.instance import init_local_instance
from ccm_connector.month_close import process_count, reconcile_month
from ccm_connector.pseudonym import pseudonym, read_key
from ccm_connector.sftp import keyring
from ccm_connector.store import open_store

NPI = "1234567893"
TOUCHPOINTS = 20
ZONE = ZoneInfo("America/Chicago")
ELEMENTS = json.dumps(["problems", "outcomes", "goals", "symptoms", "interventions", "medications", "community_services", "coordination", "review_schedule"])


def populate(conn, key: bytes, patients: int) -> None:
    """Patients enrolled before the month, ~20 touchpoints each, and a return describing them."""
    conn.execute("BEGIN")
    conn.execute("INSERT INTO return_file (content_hash, name, size, received_at, status, return_id) VALUES ('h', 'r', 1, '2026-12-01', 'accepted', 'r')")
    for i in range(patients):
        mrn = f"M{i:06d}"
        conn.execute("INSERT INTO patient (mrn, family, given, birth_date, sex) VALUES (?, 'DOE', 'PAT', '1950-01-01', 'F')", (mrn,))
        conn.executemany("INSERT INTO problem (mrn, code, system, status) VALUES (?, ?, 'I10', 'active')", [(mrn, "E11.9"), (mrn, "I10")])
        conn.execute("INSERT INTO service (mrn, date, code, practitioner_npi) VALUES (?, '2026-01-05', '99214', ?)", (mrn, NPI))
        conn.execute("INSERT INTO consent (mrn, program, date, practitioner_npi, status) VALUES (?, 'ccm', '2026-01-05', ?, 'given')", (mrn, NPI))
        conn.execute("INSERT INTO care_plan (document_id, mrn, date, elements, shared_on, reviewed_on) VALUES (?, ?, '2026-01-06', ?, '2026-01-07', '2026-10-01')", (f"PL{i}", mrn, ELEMENTS))
        pseud = pseudonym(key, mrn)
        tps, entries = [], []
        for j in range(TOUCHPOINTS):
            # Each staff member cares for ten patients, one 10-minute slot each per day: no overlaps.
            local = dt.datetime(2026, 11, 1 + j, 8, 0, tzinfo=ZONE) + dt.timedelta(minutes=10 * (i % 10))
            staff = f"S{i // 10}"
            tp_id = f"T{i}-{j}"
            tps.append((tp_id, mrn, staff, local.astimezone(dt.UTC).isoformat(), -360, 4 + (j % 5)))
            entries.append((f"E{i}-{j}", pseud, json.dumps([tp_id]), staff, local.date().isoformat(), 4 + (j % 5)))
        conn.executemany("INSERT INTO touchpoint (id, mrn, staff_id, start_utc, start_offset, minutes, activity, summary) VALUES (?, ?, ?, ?, ?, ?, 'call', 'note')", tps)
        conn.executemany(
            "INSERT INTO return_entry (entry_id, return_file_id, pseudonym, touchpoint_ids, performer, date, minutes, activity, description) VALUES (?, 1, ?, ?, ?, ?, ?, 'call', 'd')",
            entries,
        )
    conn.execute("COMMIT")


def write_roster(path: Path, patients: int) -> None:
    rows = ["staff_id,name,credential,role,location,supervisor_npi,npi,excluded,offshore_account"]
    rows += [f"S{k},Nurse {k},RN,clinical,US,{NPI},,false,false" for k in range((patients + 9) // 10)]
    path.write_text("\n".join(rows) + "\n")


def core_rate(cfg, conn, month: str) -> float:
    """Patient-months per second of the pure cores alone (reconcile, facts, rules) in one process
    on data already in memory: the stage's difference is store I/O, review packets and processes."""
    from ccm_connector import month_close as mc
    from ccm_connector.facts import facts_from_json
    from ccm_connector.month_facts import Policy, month_facts
    from ccm_connector.pseudonym import reverse_map
    from ccm_connector.reconcile import reconcile
    from ccm_connector.roster import load_roster
    from ccm_connector.rules import decide, rule_set_for

    roster = load_roster(cfg.roster.file)
    known = [r[0] for r in conn.execute("SELECT mrn FROM patient")]
    inputs = mc.shard_inputs(conn, month, cfg.zone, reverse_map(read_key(cfg.identity.pseudonym_key_file), known), mc.Shard())
    records = mc.load_patient_records(conn, inputs.patients)
    rule_set = rule_set_for(month)
    policy = Policy(visit_codes=rule_set.initiating_visit_codes, non_condition_chapters=rule_set.non_condition_chapters)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        result = reconcile(inputs.entries, inputs.touchpoints, roster, cfg.zone, rule_set.us_locations)
        for mrn in inputs.patients:
            facts = month_facts(mrn, month, records[mrn], result.for_month(mrn, month)[0], roster, policy)
            decide(facts_from_json(facts), rule_set)
        times.append(time.perf_counter() - t0)
    return len(inputs.patients) / min(times)


def sign_all(conn, month: str) -> None:
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO signoff (mrn, month, packet_hash, npi, outcome, via, at) SELECT mrn, month, packet_hash, ?, 'approved', 'bench', 'now' FROM patient_month WHERE month = ? AND billable = 1",
        (NPI, month),
    )
    conn.execute("UPDATE patient_month SET state = 'signed' WHERE month = ? AND billable = 1", (month,))
    conn.execute("COMMIT")


def timed_reconcile(cfg, conn, size: int, processes: int | None, repeats: int = 5) -> float:
    """The best of `repeats` times to reconcile and decide the month from a store holding no
    results for it yet (the best: what the stage costs when nothing else on the machine runs)."""
    times = []
    for _ in range(repeats):
        conn.execute("DELETE FROM patient_month")
        # The setup's writes are checkpointed before timing; the stage's own writes are timed.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        t0 = time.perf_counter()
        results = reconcile_month(cfg, "2026-11", conn, processes=processes)
        times.append(time.perf_counter() - t0)
        assert len(results) == size and all(r.decision["billable"] and r.changed for r in results)
    return min(times)


def run(size: int) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="bm", dir="/tmp"))
    try:
        init_local_instance(root / "i")
        cfg = load_config(root / "i" / "connector.toml")
        write_roster(cfg.roster.file, size)
        conn = open_store(cfg.store.path)
        populate(conn, read_key(cfg.identity.pseudonym_key_file), size)
        processes = process_count(conn)
        # The comparison figure, measured in the same run: the same stage in one process.
        t_one = timed_reconcile(cfg, conn, size, 1)
        t_reconcile = timed_reconcile(cfg, conn, size, None)
        cores = core_rate(cfg, conn, "2026-11")
        sign_all(conn, "2026-11")
        t0 = time.perf_counter()
        released = close_month(cfg, conn, "2026-11")["released"]
        t_close = time.perf_counter() - t0
        assert released == size
        print(f"{size:>7} patients ({size * TOUCHPOINTS} touchpoints): reconcile+rules {t_reconcile:7.1f} s"
              f" = {size / t_reconcile:6.0f} patient-months/s in {processes} processes ({t_reconcile / size * 1000:.2f} ms each;"
              f" in 1 process {size / t_one:.0f}/s); release {t_close:7.1f} s ({t_close / size * 1000:.2f} ms each);"
              f" pure cores (reconcile + facts + rules, in memory, 1 process) {cores:6.0f} patient-months/s", flush=True)
        return t_reconcile / size, (t_reconcile + t_close) / size
    finally:
        keyring.stop_agent(root / "i" / "gnupg")
        keyring.stop_agent(root / "i" / "partner" / "gnupg")
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    sizes = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "1000,10000,50000").split(",")]
    print(f"{len(os.sched_getaffinity(0))} usable CPUs; target: reconcile+rules >= 2000 patient-months/s on 2 cores")
    costs = [run(size) for size in sizes]
    if len(costs) > 1:
        print(f"month-close cost per patient at {sizes[-1]} vs {sizes[0]}: {costs[-1][1] / costs[0][1]:.2f}x (target <= 1.20x)")
        print(f"reconcile+rules cost per patient at {sizes[-1]} vs {sizes[0]}: {costs[-1][0] / costs[0][0]:.2f}x")


if __name__ == "__main__":
    main()
