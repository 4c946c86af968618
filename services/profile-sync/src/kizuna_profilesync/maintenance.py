"""Maintenance commands: `python -m kizuna_profilesync <command>`, with the service's own
configuration (environment) and with every profile-sync replica stopped.

`rewind --stream CONSENT --after N` is step 4 of restoring the consent ledger from a
backup (docs/operating.md): N is the restored ledger's last outbox position. Profile-sync
forgets the stream's events past N, folds its profiles again without them, and queues
what that changed for the connectors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from kizuna_kit.config import ConfigError, ServiceConfig
from kizuna_profilesync.application import ProfileSyncApplication
from kizuna_profilesync.domain.projection import CONSENT_STREAM
from kizuna_profilesync.main import METRICS_PORT, PORT, SERVICE, open_state

USAGE_ERROR = 2


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(
        prog="python -m kizuna_profilesync",
        description="Without a command: the profile-sync service.",
    )
    sub = commands.add_subparsers(dest="command", required=True)
    rewind = sub.add_parser(
        "rewind",
        help="forget a stream's events past a position (after a restore behind it)",
        description="Forget STREAM's events past position AFTER, fold the profiles again "
        "and queue for each connector what that changed. Run it with profile-sync stopped.",
    )
    # CONSENT only: identity's store is not restored this way, and refolding identity
    # events an erasure redacted would bring the erased customer back as a blank profile.
    rewind.add_argument("--stream", required=True, choices=[CONSENT_STREAM])
    rewind.add_argument(
        "--after", required=True, type=int, help="the restored service's last position"
    )
    return commands


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = parser().parse_args(argv)  # a usage error exits with status 2
    try:
        config = ServiceConfig.from_env(
            SERVICE, default_port=PORT, default_metrics_port=METRICS_PORT, env=env
        )
        store, connectors = open_state(config, env)
    except ConfigError as exc:
        print(f"kizuna-{SERVICE}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    try:
        rewound = ProfileSyncApplication(store, connectors).rewind(args.stream, args.after)
    except ValueError as exc:  # a position the rewind refuses: nothing was changed
        print(f"kizuna-{SERVICE}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    finally:
        connectors.close()
        store.close()
    print(
        f"{args.stream}: forgot {rewound.forgotten} events past position {args.after};"
        f" {rewound.changed} profiles changed, {rewound.queued} deliveries queued"
    )
    return 0
