"""`ccm-connector`: the command line every user and the scheduler go through.

Exit codes: 0 success, 1 operational failure, 2 bad input or configuration; always with a
message on stderr that says what and where.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from . import audit, doctor, logs
from .config import CONFIG_ENV, Config, config_path, load_config
from .errors import InputError, OperationalError
from .instance import init_instance, init_local_instance
from .progress import progress
from .store import open_store

PROG = "ccm-connector"
log = logs.get_logger("cli")

Handler = Callable[[argparse.Namespace], int]


def configured(args: argparse.Namespace) -> Config:
    """Load the configuration named by --config / $CCM_CONNECTOR_CONFIG / ./connector.toml."""
    cfg = load_config(config_path(args.config))
    logs.setup_logging(cfg.logging.level, cfg.logging.file)
    return cfg


# --- built commands ------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    instance = init_local_instance(folder) if args.local else init_instance(folder)
    logs.event(log, "instance.created", local=bool(args.local))
    print(f"created {instance.config}")
    if args.local:
        print(f"practice key {instance.practice_fingerprint}; simulated partner key {instance.partner_fingerprint}")
        print(f"next: {PROG} --config {instance.config} doctor")
    else:
        print(f"next: fill in {instance.config} and {folder / 'roster.csv'}, then run `{PROG} --config {instance.config} doctor`")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = configured(args)
    items = doctor.run_checks(cfg)
    print(doctor.render(items))
    failed = sum(i.status == "fail" for i in items)
    logs.event(log, "doctor.finished", checks=len(items), failed=failed)
    return 1 if failed else 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    cfg = configured(args)
    conn = open_store(cfg.store.path)
    try:
        key = audit.read_key(cfg.audit.key_file)
    except (OSError, ValueError) as e:
        raise InputError(f"[audit] key_file: {e}") from None
    verdict = audit.verify(conn, key)
    if verdict.ok:
        print(f"audit chain intact: {verdict.events} events")
        return 0
    print(f"audit chain BROKEN at event {verdict.broken_at}: {verdict.reason} ({verdict.events} events verified before it)")
    logs.event(log, "audit.broken", seq=verdict.broken_at, reason=verdict.reason)
    return 1


def cmd_listen(args: argparse.Namespace) -> int:
    from . import intake

    cfg = configured(args)
    if args.port is not None and not 0 <= args.port <= 65535:
        raise InputError(f"--port: must be 0-65535, got {args.port}")

    def announce(host: str, port: int) -> None:
        print(f"listening on {host}:{port}", flush=True)

    return intake.listen(cfg, args.port, announce)


def cmd_ingest(args: argparse.Namespace) -> int:
    from . import intake

    cfg = configured(args)
    stage = intake.open_intake(cfg)
    try:
        tally = intake.ingest_files(stage, [Path(f) for f in args.files], lambda text: print(f"{PROG}: {text}", file=sys.stderr), progress)
    finally:
        stage.conn.close()
    print(f"ingested {tally.line()}")
    return 2 if tally.unreadable_files else 0


def cmd_mapping_check(args: argparse.Namespace) -> int:
    import json

    from . import intake
    from .mappings.profile import load_profile

    # It writes nothing, so it also runs where no instance exists yet (an interface analyst's
    # laptop): then the shipped profiles and UTC for timestamps that carry no offset.
    path = config_path(args.config)
    if path.exists() or args.config or os.environ.get(CONFIG_ENV):
        cfg = configured(args)
        profile = load_profile(args.profile or cfg.intake.profile, cfg.intake.profile_dir)
        zone = cfg.zone
    else:
        profile = load_profile(args.profile or "generic-2.5.1")
        zone = ZoneInfo("UTC")
        print(f"{PROG}: no configuration at {path}; using profile {profile.name} and UTC for times without an offset", file=sys.stderr)

    def emit(line: dict) -> None:
        if args.json:
            print(json.dumps(line, ensure_ascii=False))
        else:
            kinds = ", ".join(r["kind"] for r in line["records"])
            detail = f": {line['reason']}" if line["reason"] else ""
            print(f"{line['file']}#{line['index']} {line['control_id'] or '-'} {line['type'] or '-'} {line['action']}{detail}" + (f" [{kinds}]" if kinds else ""))

    ok = intake.mapping_check([Path(f) for f in args.files], profile, zone, emit, lambda text: print(f"{PROG}: {text}", file=sys.stderr))
    return 0 if ok else 2


def cmd_rules_check(args: argparse.Namespace) -> int:
    from .rules_cli import rules_check

    return rules_check(args.file, sys.stdout, sys.stderr)


def cmd_queue_export(args: argparse.Namespace) -> int:
    from .queue_export import export_queue

    result = export_queue(configured(args), track=progress)
    print(result.summary())
    return 0


def cmd_returns_pull(args: argparse.Namespace) -> int:
    from .returns_pull import pull_returns

    result = pull_returns(configured(args))
    print(result.summary())
    return 1 if result.refused else 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    import json

    from .month_close import reconcile_month

    cfg = configured(args)
    results = reconcile_month(cfg, args.month, track=progress)
    if args.json:
        for r in results:
            print(json.dumps(r.to_json(), ensure_ascii=False, sort_keys=False))
        return 0
    print(render_reconciliation(args.month, results))
    return 0


def render_reconciliation(month: str, results: list) -> str:
    """A readable summary: one line per patient-month, then the findings that need a person."""
    billable = [r for r in results if r.decision["billable"]]
    lines = [f"{month}: {len(results)} patient-months, {len(billable)} billable, {sum(r.changed for r in results)} changed by this run"]
    for r in results:
        codes = ", ".join(f"{ln['code']}x{ln['units']}" for ln in r.decision["lines"]) or "not billable"
        blocks = sorted({f["code"] for f in r.decision["findings"] if f["severity"] == "block"})
        recon = sorted({f["code"] for f in r.reconciliation if f["severity"] in ("exclude", "warn")})
        lines.append(f"  {r.mrn}: {r.decision['minutes']['countable']} countable min; {codes}; state {r.state}"
                     + (f"; blocked: {', '.join(blocks)}" if blocks else "") + (f"; reconciliation: {', '.join(recon)}" if recon else ""))
    return "\n".join(lines)


def cmd_signoff(args: argparse.Namespace) -> int:
    from .signoff import signoff_command

    cfg = configured(args)
    conn = open_store(cfg.store.path)
    if args.care_plan_shared:
        from .signoff import record_plan_shared

        print(record_plan_shared(cfg, conn, args.patient, args.care_plan_shared))
        return 0
    if not (args.month and args.npi):
        raise InputError("signoff: --month and --npi are required (unless recording --care-plan-shared)")
    print(signoff_command(cfg, conn, args.patient, args.month, args.npi, args.reject, args.reason))
    return 0


def cmd_close_month(args: argparse.Namespace) -> int:
    from .billing import close_month

    cfg = configured(args)
    result = close_month(cfg, open_store(cfg.store.path), args.month, track=progress)
    print(f"{args.month}: released {result['released']} patient-months ({result['lines']} charge lines); delivered {result['delivered']} files/messages")
    return 0


def cmd_billing_void(args: argparse.Namespace) -> int:
    from .billing import void

    cfg = configured(args)
    result = void(cfg, open_store(cfg.store.path), args.patient, args.month)
    print(f"voided {args.patient} {args.month}: {result['reversed_lines']} reversal lines; the month awaits a new sign-off")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .service import run_service

    return run_service(configured(args))


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from . import status

    cfg = configured(args)
    conn = open_store(cfg.store.path)
    try:
        result = status.gather(cfg, conn)
    finally:
        conn.close()
    print(json.dumps(result, indent=2) if args.json else status.render(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from . import report

    month = report.parse_month(args.month)
    if not args.html and not args.json:
        raise InputError("report: give --html FILE, --json, or both")
    cfg = configured(args)
    conn = open_store(cfg.store.path)
    try:
        data = report.gather(cfg, conn, month)
    finally:
        conn.close()
    if args.html:
        written = report.write_html(Path(args.html), report.render(data))
        logs.event(log, "report.written", month=month, patients=len(data["patients"]))
        print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(data, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), args.month, args.seed)


# --- the parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Connects a practice's EHR to its offshore CCM documentation team, safely.",
    )
    parser.add_argument("--config", help="configuration file (default: $CCM_CONNECTOR_CONFIG or ./connector.toml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help: str, parent: argparse._SubParsersAction = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        p.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    def group(name: str, help: str) -> argparse._SubParsersAction:
        p = sub.add_parser(name, help=help, description=help)
        return p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)

    p = command("init", cmd_init, "create an instance folder: configuration, data folders, secrets")
    p.add_argument("dir", help="folder to create")
    p.add_argument("--local", action="store_true", help="self-contained: local drop, fresh keys, simulated partner")
    command("doctor", cmd_doctor, "check configuration, store, gpg and keys, partner BAA and drop; exit 0 only when all pass")
    command("run", cmd_run, "run the service: MLLP listener and scheduled jobs")
    p = command("listen", cmd_listen, "run the MLLP listener only")
    p.add_argument("--port", type=int, help="override [mllp] port")
    p = command("ingest", cmd_ingest, "ingest HL7 files (single messages, many per file, FHS/BHS batches)")
    p.add_argument("files", nargs="+", metavar="FILE")

    mapping = group("mapping", "EHR dialect profiles")
    p = command("check", cmd_mapping_check, "map HL7 files without storing anything; one JSON line per message", mapping)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--profile", help="profile name (default: [intake] profile)")
    p.add_argument("--json", action="store_true", help="JSON lines output")

    queue = group("queue", "work queues for the offshore team")
    command("export", cmd_queue_export, "build, encrypt, sign and publish the work queue", queue)
    returns = group("returns", "signed returns from the offshore team")
    command("pull", cmd_returns_pull, "download, verify, decrypt and store returns", returns)

    p = command("reconcile", cmd_reconcile, "reconcile the offshore log with practice records and apply the rules")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--json", action="store_true")
    p = command("signoff", cmd_signoff, "record the billing physician's sign-off of a patient-month")
    p.add_argument("--patient", required=True, help="MRN")
    p.add_argument("--month", help="YYYY-MM")
    p.add_argument("--npi", help="the billing practitioner's NPI")
    p.add_argument("--reject", action="store_true", help="reject the packet (and its care-plan draft)")
    p.add_argument("--reason", help="why (required with --reject; sent back to the offshore team)")
    p.add_argument("--care-plan-shared", metavar="DATE", help="only record the date a copy of the current care plan reached the patient")
    p = command("close-month", cmd_close_month, "release signed, billable patient-months to billing once")
    p.add_argument("--month", required=True, help="YYYY-MM")
    billing = group("billing", "billing output")
    p = command("void", cmd_billing_void, "send a reversal for a released patient-month and reopen it", billing)
    p.add_argument("--patient", required=True)
    p.add_argument("--month", required=True)

    p = command("status", cmd_status, "counters, last job runs, what needs a person")
    p.add_argument("--json", action="store_true")
    p = command("report", cmd_report, "monthly report for the billing lead")
    p.add_argument("--month", required=True)
    p.add_argument("--html", metavar="FILE")
    p.add_argument("--json", action="store_true")

    rules = group("rules", "the care-management rules engine")
    p = command("check", cmd_rules_check, "decide what one or more patient-months may bill (JSON in, JSON out)", rules)
    p.add_argument("file", metavar="FILE", help="facts JSON file, or - for stdin")
    audit_group = group("audit", "the hash-chained audit log")
    command("verify", cmd_audit_verify, "verify the audit chain; report the first broken link", audit_group)
    p = command("demo", cmd_demo, "run a whole month for a synthetic practice on this machine")
    p.add_argument("--out", default="demo-out", help="folder for the demo instance (new or empty; default demo-out)")
    p.add_argument("--month", help="YYYY-MM (default: the month before the demo's fixed date, 2026-12-01)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic practice (default 7)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logs.setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except OperationalError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001
        # An unexpected error's message may quote input (PHI): log its type and place only.
        logs.event(log, "command.crashed", level=logging.ERROR, exc_info=True, command=args.command)
        print(f"{PROG}: internal error ({type(e).__name__}) in `{args.command}`; details are in the log", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
