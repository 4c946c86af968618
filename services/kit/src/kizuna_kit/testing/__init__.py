"""Test helpers that run real NATS and PostgreSQL servers on ephemeral ports.

The pytest fixtures live in :mod:`kizuna_kit.testing.plugin`; load them with
``pytest_plugins = ["kizuna_kit.testing.plugin"]``.
"""

from __future__ import annotations

from kizuna_kit.natsd import NatsServer
from kizuna_kit.ports import free_port
from kizuna_kit.testing.postgres import PostgresCluster

__all__ = ["NatsServer", "PostgresCluster", "free_port"]
