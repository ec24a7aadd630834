"""`ccm-connector demo`: a whole month for a synthetic practice, on this machine, no outside service.

The stages are the real ones, called in the order the scheduler would call them over a month:

1. `init --local` into the output folder (a fresh instance: keys, local drop, simulated partner),
   the synthetic practice's staff roster written over the template;
2. the practice's HL7 feed (connector/synthetic.py) sent with the MLLP client to the intake
   listener on 127.0.0.1 (a free port, in this process), one message per frame, each ACKed;
3. `queue export` at the month's end into the local drop (DIR/drop);
4. the simulated offshore team with the real offshore side: `ccm-offshore pull` into
   DIR/partner/work, a return written from the queue (with planted mistakes), `validate`, `push`;
5. `returns pull`, `reconcile` for the month;
6. review packets to the EHR (MDM^T02 into DATA_DIR/outbox/ehr); one patient-month signed by the
   simulated EHR over HL7 (MDM^T04 through the same listener), the others with `signoff`;
7. `close-month` (DFT^P03, CSV and documentation packages in DIR/billing) and the month's report
   (DIR/report.html).

Stdout gets a few plain lines (counts, codes, file locations; no patient data). The stages' JSON
logs go to DIR/demo.log; stderr shows warnings and errors only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from . import intake, logs, report, synthetic
from .billing import close_month
from .config import Config, load_config
from .errors import InputError, OperationalError
from .exchange_documents import parse_return
from .hl7 import ack, mllp, reader
from .instance import init_local_instance
from .month_close import parse_month, reconcile_month
from .offshore_cli import pull as offshore_pull
from .offshore_cli import push as offshore_push
from .offshore_cli import validate_file
from .offshore_config import load_offshore_config
from .queue_export import export_queue
from .returns_pull import pull_returns
from .rules import RuleSetNotFound, rule_set_for
from .sftp import keyring, naming
from .signoff import dispatch_packets, signoff_command
from .store import open_store

log = logs.get_logger("demo")
DEMO_TODAY = dt.date(2026, 12, 1)  # the demo's fixed clock: its month is the one before
DEFAULT_SEED = 7
DEFAULT_OUT = "demo-out"
LOG_NAME = "demo.log"


def default_month(today: dt.date = DEMO_TODAY) -> str:
    last = today.replace(day=1) - dt.timedelta(days=1)
    return f"{last:%Y-%m}"


def checked_month(month: str | None) -> str:
    month = parse_month(month or default_month())
    try:
        rule_set_for(month)
    except RuleSetNotFound as e:
        raise InputError(f"--month: {e}") from None
    return month


def fresh_folder(out: Path) -> None:
    """The demo makes its own instance: the folder must not exist, or be empty."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give another --out")
    longest = (out / "partner" / "gnupg").resolve()
    if len(str(longest)) > keyring.MAX_HOME_LENGTH:
        raise InputError(
            f"{out}: too long a path for GnuPG's sockets ({longest} is over {keyring.MAX_HOME_LENGTH} characters); give a shorter --out"
        )
    if out.exists() and any(out.iterdir()):
        raise InputError(
            f"{out}: already exists and is not empty; the demo builds a fresh instance there (remove it or give another --out)"
        )


def log_to_file(out: Path) -> Path:
    """The stages' JSON lines into DIR/demo.log; stderr keeps warnings and errors only."""
    path = out / LOG_NAME
    logs.setup_logging("info", path)
    for handler in logging.getLogger(logs.ROOT).handlers:
        if type(handler) is logging.StreamHandler:
            handler.setLevel(logging.WARNING)
    return path


# --- the MLLP leg ---------------------------------------------------------------------------------


async def _send(cfg: Config, texts: list[str]) -> tuple[int, Counter]:
    """Start the intake listener on a free loopback port, send every message on one connection
    with the MLLP client, each waiting for its ACK; return the port and the ACK codes."""
    stage = intake.open_intake(cfg)
    limits = mllp.Limits(
        cfg.mllp.max_frame_bytes, float(cfg.mllp.idle_timeout_seconds), cfg.mllp.max_connections
    )
    server = mllp.Server(
        intake.MllpReceiver(stage, cfg.mllp.max_frame_bytes), "127.0.0.1", 0, limits
    )
    codes: Counter = Counter()
    try:
        port = await server.start()
        async with mllp.Client("127.0.0.1", port, timeout=30) as client:
            for text in texts:
                data = text.encode("utf-8")
                answer = ack.read_ack(await client.send(data))
                expected = reader.read_message(data).control_id
                codes[answer.code if answer.control_id == expected else "mismatched"] += 1
    finally:
        await server.close()
        stage.conn.close()
    return port, codes


def send_over_mllp(cfg: Config, texts: list[str]) -> tuple[int, Counter]:
    try:
        return asyncio.run(_send(cfg, texts))
    except (OSError, mllp.ClientError) as e:
        raise OperationalError(
            f"demo: MLLP to the intake listener failed ({type(e).__name__})"
        ) from None


# --- the month --------------------------------------------------------------------------------------


def _tally(counter: Counter) -> str:
    return (
        ", ".join(
            f"{code} {n}" for code, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        or "none"
    )


def _packets(cfg: Config) -> dict[str, str]:
    """Review packets in the EHR's folder, by the patient's MRN (as the EHR would file them)."""
    folder = cfg.signoff.folder or (cfg.store.data_dir / "outbox" / "ehr")
    found = {}
    for path in sorted(folder.glob("*.hl7")):
        data = path.read_bytes()
        message = reader.read_message(data)
        txa = message.first("TXA")
        if txa is not None and txa.get(2) == "CCM-REVIEW":
            found[message.first("PID").get(3)] = data.decode("utf-8")
    return found


def run_demo(
    out: Path,
    month: str | None = None,
    seed: int = DEFAULT_SEED,
    say: Callable[[str], None] = print,
) -> int:
    month = checked_month(month)
    fresh_folder(out)
    practice = synthetic.generate(seed, month)
    # The partner's BAA takes effect on the month's first day, so the month-end queue may leave.
    instance = init_local_instance(out, today=synthetic.month_bounds(month)[0])
    try:
        return _run(out, instance.config, practice, say)
    finally:
        keyring.stop_agent(out / "gnupg")
        keyring.stop_agent(out / "partner" / "gnupg")


def _run(out: Path, config: Path, practice: synthetic.Practice, say: Callable[[str], None]) -> int:
    month = practice.month
    _, last = synthetic.month_bounds(month)
    (out / "roster.csv").write_text(synthetic.roster_csv(practice.staff), encoding="utf-8")
    cfg = load_config(config)
    log_file = log_to_file(out)
    zone = cfg.zone
    roles = Counter(
        "offshore documentation account"
        if s.offshore_account
        else {"non_clinical": "scheduler"}.get(s.role, s.role)
        for s in practice.staff
    )
    say(
        f"CCM Connector demo: synthetic practice {cfg.practice.id}, month {month} ({cfg.practice.time_zone}), seed {practice.seed}"
    )
    say(f"instance: {out} (roster of {len(practice.staff)}: {_tally(roles)})")

    # 1. The EHR feed over MLLP.
    feed = synthetic.messages(practice)
    port, codes = send_over_mllp(cfg, feed)
    stays = sum(len(p.stays) for p in practice.patients)
    say(
        f"HL7: {len(feed)} messages sent over MLLP to 127.0.0.1:{port}, ACKed {_tally(codes)} "
        f"({len(practice.patients)} patients, {len(practice.touchpoints)} touchpoints, {stays} inpatient stays)"
    )
    if codes.get("AA", 0) != len(feed):
        raise OperationalError(
            f"demo: intake did not accept the whole feed (ACKs: {_tally(codes)}); see {log_file}"
        )

    # 2. The queue, at the end of the month's last day.
    exported = export_queue(cfg, now=dt.datetime.combine(last, dt.time(23, 30), zone))
    if exported.batch_id is None:
        raise OperationalError("demo: queue export found nothing to send")
    say(
        f"queue export: sent {exported.file_name} to the local drop (batch {exported.batch_id}: {exported.patients} patients, {exported.touchpoints} touchpoints)"
    )

    # 3. The simulated offshore team, with the real offshore side.
    team = load_offshore_config(out / "partner" / "offshore.toml")
    pulled = offshore_pull(team)
    if pulled.refused or not pulled.queues:
        raise OperationalError(
            f"demo: the offshore team could not pull the queue ({pulled.summary()})"
        )
    queue_file = team.team.work_dir / f"{exported.batch_id}.xml"
    return_id = f"DEMO-{month}-01"
    created = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(10, 0), dt.UTC)
    document = synthetic.offshore_return(
        queue_file.read_bytes(), synthetic.scenario_for(practice, return_id, created)
    )
    return_file = team.team.work_dir / f"return-{return_id}.xml"
    return_file.write_bytes(document)
    return_file.chmod(0o600)
    validate_file(str(return_file))
    offshore_push(team, str(return_file))
    ret = parse_return(document)
    say(
        f"offshore team: pulled {exported.batch_id}; wrote return {return_id} ({len(ret.entries)} entries, {len(ret.drafts)} care-plan draft(s), "
        f"proposed codes for {len({c.pseudonym for c in ret.codes})} patient-months), validated and pushed it as {naming.return_name(cfg.practice.id, return_id)}"
    )

    # 4. Returns in, the month reconciled.
    returns = pull_returns(cfg)
    if returns.accepted != [return_id]:
        raise OperationalError(f"demo: the return was not accepted ({returns.summary()})")
    say(f"returns pull: return {return_id} accepted (signed by the partner's pinned key)")
    results = reconcile_month(cfg, month)
    recon = Counter(f["code"] for r in results for f in r.reconciliation)
    rules = Counter(f["code"] for r in results for f in r.decision["findings"])
    entries_with_findings = {
        f["entry"] for r in results for f in r.reconciliation if f.get("entry")
    }
    billable = [r for r in results if r.decision["billable"]]
    say(
        f"reconcile {month}: {len(ret.entries)} log entries checked against the practice's records, "
        f"{len(entries_with_findings)} with findings; {len(results)} patient-months, {len(billable)} billable"
    )
    say(f"  reconciliation findings: {_tally(recon)}")
    say(f"  rules findings: {_tally(rules)}")

    # 5. Sign-off: packets to the EHR, one signed over HL7, the rest with the CLI's path.
    conn = open_store(cfg.store.path)
    try:
        dispatched = dispatch_packets(cfg, conn)
        packets = _packets(cfg)
        npi = cfg.practice.billing_npis[0]
        over_hl7 = 0
        awaiting = [
            r["mrn"]
            for r in conn.execute(
                "SELECT mrn FROM patient_month WHERE month = ? AND state = 'awaiting_signoff' ORDER BY mrn",
                (month,),
            )
        ]
        if awaiting:
            # The EHR's answer to the first packet: the physician signed it in the EHR (MDM^T04).
            mrn = awaiting[0]
            if mrn not in packets:
                raise OperationalError(
                    f"demo: no review packet in the EHR folder for a patient-month of {month}"
                )
            answer = synthetic.review_answer(
                packets[mrn],
                dt.datetime.now(zone).replace(microsecond=0),
                "SIGN000001",
                synthetic.Signer(npi=npi),
            )
            _, answered = send_over_mllp(cfg, [answer])
            state = conn.execute(
                "SELECT state FROM patient_month WHERE mrn = ? AND month = ?", (mrn, month)
            ).fetchone()[0]
            if state != "signed":
                raise OperationalError(
                    f"demo: the EHR's signature (MDM^T04, ACKed {_tally(answered)}) did not sign its patient-month; see {log_file}"
                )
            over_hl7 = 1
        by_cli = 0
        for (mrn,) in conn.execute(
            "SELECT mrn FROM patient_month WHERE month = ? AND state = 'awaiting_signoff' ORDER BY mrn",
            (month,),
        ).fetchall():
            signoff_command(cfg, conn, mrn, month, npi, False, None)
            by_cli += 1
        dispatch_packets(cfg, conn)  # delivers the approved care-plan revision to the EHR
        say(
            f"sign-off: {dispatched['queued']} review packets (MDM^T02) to the EHR; {over_hl7} signed over HL7 (MDM^T04), {by_cli} with `signoff` (NPI {npi})"
        )

        # 6. Close the month; the report.
        closed = close_month(cfg, conn, month)
        states = Counter(
            r[0] for r in conn.execute("SELECT state FROM patient_month WHERE month = ?", (month,))
        )
        data = report.gather(cfg, conn, month)
    finally:
        conn.close()
    page = report.write_html(out / "report.html", report.render(data))
    revenue = data["revenue"]
    say(
        f"close-month: released {closed['released']} patient-months ({closed['lines']} charge lines); "
        f"estimated revenue ${revenue['total']} ({data['rules']} fee table{'' if revenue['all_confirmed'] else ', approximate'}); "
        f"patient-months by state: {_tally(states)}"
    )
    billing = out / "billing"
    dft = len(list(billing.glob("*.hl7")))
    csv_files = len(list(billing.glob("*.csv")))
    packages = len(list((billing / "packages").glob("*.xml")))
    say(
        f"files: {billing} ({dft} DFT^P03 .hl7, {csv_files} CSV, {packages} documentation packages in packages/), "
        f"{out / 'drop'} (the encrypted exchange), {page}, log {log_file}"
    )
    logs.event(
        log,
        "demo.finished",
        month=month,
        messages=len(feed),
        released=closed["released"],
        lines=closed["lines"],
    )
    return 0
