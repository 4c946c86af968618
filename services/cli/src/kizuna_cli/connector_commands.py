"""`kizuna connector ...`: the operator's view of a connector."""

from __future__ import annotations

from typing import TextIO

import grpc

from kizuna.profilesync.v1 import profilesync_pb2 as pb
from kizuna.profilesync.v1.profilesync_pb2_grpc import ProfileSyncServiceStub
from kizuna_cli.client import Target


def status(target: Target, connector_id: str, out: TextIO) -> int:
    with grpc.insecure_channel(target.address) as channel:
        reply = ProfileSyncServiceStub(channel).GetConnectorStatus(
            pb.GetConnectorStatusRequest(connector_id=connector_id),
            metadata=target.metadata,
            timeout=30,
        )
    state = "PAUSED" if reply.paused else "running"
    out.write(f"connector {reply.connector_id}: {state}\n")
    for name in ("position", "lag", "delivered", "pending", "failed", "dead_lettered"):
        out.write(f"  {name:<14} {getattr(reply, name):,}\n")
    if reply.last_error:
        out.write(f"  {'last_error':<14} {reply.last_error}\n")
    return 0
