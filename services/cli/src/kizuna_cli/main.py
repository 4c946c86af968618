"""Entry point of the `kizuna` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kizuna_cli.stack import default_data_dir, up


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kizuna", description="Kizuna operator and auditor tool")
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("up", help="run nats-server and every service here (Ctrl-C stops)")
    run.add_argument("--data-dir", type=Path, default=None, help="default: .kizuna/")
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.command == "up":
        sys.exit(up(args.data_dir or default_data_dir(), os.environ))
