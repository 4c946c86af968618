"""Entry point of the `kizuna` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

from kizuna_cli import connector_commands, consent_commands, demo
from kizuna_cli.client import CliError, describe, target
from kizuna_cli.stack import default_data_dir, up


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kizuna", description="Kizuna operator and auditor tool")
    root.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="API token file (default: $KIZUNA_TOKEN, $KIZUNA_TOKEN_FILE or .kizuna/admin.token)",
    )
    commands = root.add_subparsers(dest="command", required=True)

    run = commands.add_parser("up", help="run nats-server and every service here (Ctrl-C stops)")
    run.add_argument("--data-dir", type=Path, default=None, help="default: .kizuna/")

    commands.add_parser("demo", help="the Tanaka-san story against a running stack")

    consent = commands.add_parser("consent", help="consent state and exports").add_subparsers(
        dest="action", required=True
    )
    when = "a date (YYYY-MM-DD, meaning the end of that day, UTC) or an ISO 8601 time"
    state = consent.add_parser("state", help="a subject's consent state at a time")
    state.add_argument("--subject", required=True)
    state.add_argument("--at", required=True, help=when)
    state.add_argument("--as-known-at", default=None, help="only records recorded by then: " + when)
    export = consent.add_parser("export", help="every subject's state at a time, as CSV")
    export.add_argument("--at", required=True, help=when)
    export.add_argument("--as-known-at", default=None, help=when)
    export.add_argument("--statement", default=None, help="one statement id only")
    export.add_argument("--out", type=Path, required=True, help="the CSV file to write")

    ledger = commands.add_parser(
        "ledger", help="verify and export the consent ledger"
    ).add_subparsers(dest="action", required=True)
    verify = ledger.add_parser(
        "verify", help="verify the ledger (online), or an exported one with --file (offline)"
    )
    verify.add_argument("--file", type=Path, default=None, help="a ledger export (JSON lines)")
    verify.add_argument(
        "--checkpoint", type=Path, default=None, help="the checkpoint to check against"
    )
    verify.add_argument("--public-key", type=Path, default=None, help="default: CHECKPOINT.pub")
    connector = commands.add_parser("connector", help="profile-sync connectors").add_subparsers(
        dest="action", required=True
    )
    show = connector.add_parser("status", help="a connector's delivery status")
    show.add_argument("connector_id")

    dump = ledger.add_parser("export", help="export the raw ledger and a signed checkpoint")
    dump.add_argument("--out", type=Path, required=True)
    dump.add_argument(
        "--checkpoint", type=Path, default=None, help="also write the checkpoint here"
    )
    return root


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "up":
        return up(args.data_dir or default_data_dir(), os.environ)
    if args.command == "ledger" and args.action == "verify" and args.file is not None:
        if args.checkpoint is None:
            raise CliError("--file needs --checkpoint")
        return consent_commands.verify_offline(
            args.file, args.checkpoint, args.public_key, sys.stdout
        )
    if args.command == "demo":
        return demo.demo(
            target("identity", 50051, args.token_file),
            target("consent", 50052, args.token_file),
            target("profile-sync", 50053, args.token_file),
            sys.stdout,
        )
    if args.command == "connector":
        sync = target("profile-sync", 50053, args.token_file)
        return connector_commands.status(sync, args.connector_id, sys.stdout)
    consent = target("consent", 50052, args.token_file)
    if args.command == "consent" and args.action == "state":
        return consent_commands.state(consent, args.subject, args.at, args.as_known_at, sys.stdout)
    if args.command == "consent" and args.action == "export":
        return consent_commands.export(consent, args.at, args.as_known_at, args.statement, args.out)
    if args.command == "ledger" and args.action == "verify":
        return consent_commands.verify_online(consent, sys.stdout)
    if args.command == "ledger" and args.action == "export":
        return consent_commands.export_ledger(consent, args.out, args.checkpoint)
    raise CliError(f"unknown command {args.command} {getattr(args, 'action', '')}")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = dispatch(args)
    except CliError as exc:
        print(f"kizuna: {exc}", file=sys.stderr)
        code = 1
    except grpc.RpcError as exc:
        print(f"kizuna: {describe(exc)}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
