"""deploy/Dockerfile, read without a Docker engine: one target per service, a pinned
base, a non-root numeric USER, only that service's packages copied in, and ports that
agree with the Kubernetes manifests."""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.deploy.rendering import DEPLOY, K8S, REPO, SERVICES, ServiceSpec

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
SHARED_PACKAGES = ("requirements/constraints.txt", "protos/python", "services/kit")
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|make|build-essential|curl|wget)\b")


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    name: str
    base: str  # an image, or the name of an earlier stage
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> dict[str, Stage]:
    """Stages by name (unnamed ones by index), instructions with continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=words[0])
            stages[name] = current
        elif keyword != "ARG" or current is not None:
            assert current is not None, f"{keyword} before the first FROM"
            current.instructions.append(Instruction(keyword, args.strip()))
    return stages


STAGES = parse(DOCKERFILE.read_text())


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    stages = []
    while name in STAGES:
        stages.append(STAGES[name])
        name = STAGES[name].base
    return stages


def copy_parts(instruction: Instruction) -> tuple[str | None, list[str]]:
    """(--from stage or None, sources) of a COPY."""
    words = shlex.split(instruction.args)
    source_stage = None
    for word in [w for w in words if w.startswith("--")]:
        if word.startswith("--from="):
            source_stage = word.removeprefix("--from=")
    paths = [w for w in words if not w.startswith("--")]
    return source_stage, [p.rstrip("/") for p in paths[:-1]]


def all_stages(target: str) -> list[Stage]:
    """Every stage that contributes to the target: its chain and what it copies from."""
    result: dict[str, Stage] = {}
    todo = [target]
    while todo:
        for stage in chain(todo.pop()):
            if stage.name not in result:
                result[stage.name] = stage
                todo.extend(s for s, _ in map(copy_parts, stage.all("COPY")) if s is not None)
    return list(result.values())


def context_sources(target: str) -> set[str]:
    """Every path taken from the build context into the target, through all its stages."""
    sources: set[str] = set()
    for stage in all_stages(target):
        for instruction in stage.all("COPY") + stage.all("ADD"):
            source_stage, paths = copy_parts(instruction)
            if source_stage is None:
                sources.update(paths)
    return sources


def effective(target: str, keyword: str) -> Instruction | None:
    """The last `keyword` instruction in force in the target's image."""
    for stage in chain(target):
        found = stage.all(keyword)
        if found:
            return found[-1]
    return None


def external_bases() -> set[str]:
    return {s.base for s in STAGES.values() if s.base not in STAGES}


def config_ports(service: ServiceSpec) -> tuple[int, int]:
    env = dict(
        line.split("=", 1)
        for line in (K8S / "base" / service.name / "config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return int(env[f"KIZUNA_{service.env}_PORT"]), int(env[f"KIZUNA_{service.env}_METRICS_PORT"])


def test_base_image_is_pinned_to_an_exact_release() -> None:
    (base,) = external_bases()
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base


def test_one_target_per_service() -> None:
    assert {s.name for s in SERVICES} <= set(STAGES)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_target_runs_as_a_numeric_non_root_user(service: ServiceSpec) -> None:
    user = effective(service.name, "USER")
    assert user is not None, "no USER: the image would run as root"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user.args)
    assert match, f"USER {user.args} must be numeric (runAsNonRoot can only check a uid)"
    assert int(match.group(1)) != 0
    assert match.group(2) is None or int(match.group(2)) != 0
    # The uid the manifests run as.
    deployment = (K8S / "base" / service.name / "deployment.yaml").read_text()
    assert f"runAsUser: {match.group(1)}" in deployment


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_target_copies_only_its_own_packages(service: ServiceSpec) -> None:
    sources = context_sources(service.name)
    assert sources == {*SHARED_PACKAGES, f"services/{service.name}"}
    # Only the service's own packages become wheels in its builder.
    wheel_lines = [
        i.args
        for stage in all_stages(service.name)
        for i in stage.all("RUN")
        if "pip wheel" in i.args
    ]
    assert len(wheel_lines) == 1
    local = set(re.findall(r"\./(\S+)", wheel_lines[0]))
    assert local == {"protos/python", "services/kit", f"services/{service.name}"}
    assert "-c requirements/constraints.txt" in wheel_lines[0]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_runtime_image_has_no_build_tools(service: ServiceSpec) -> None:
    runtime = chain(service.name)
    for stage in runtime:
        for instruction in stage.all("RUN"):
            assert not BUILD_TOOLS.search(instruction.args), (stage.name, instruction.args)
            assert "pip wheel" not in instruction.args
            assert "pip install" not in instruction.args
    copies = [copy_parts(i) for stage in runtime for i in stage.all("COPY")]
    # The runtime gets the built environment from the builder, nothing from the context.
    assert copies == [(f"builder-{service.name}", ["/opt/kizuna"])]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_target_ports_and_entry_point(service: ServiceSpec) -> None:
    expose = effective(service.name, "EXPOSE")
    assert expose is not None
    assert sorted(int(p) for p in expose.args.split()) == sorted(config_ports(service))
    assert sorted(config_ports(service)) == sorted((service.grpc_port, service.metrics_port))
    entry = effective(service.name, "ENTRYPOINT")
    assert entry is not None
    assert entry.args == f'["python", "-m", "{service.module}"]'
    module = REPO / "services" / service.name / "src" / service.module / "__main__.py"
    assert module.exists(), f"python -m {service.module} needs {module}"


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: the last match wins."""
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        hit = fnmatch.fnmatch(path, body) or path.startswith(body + "/")
        if body.startswith("**/"):
            hit = hit or fnmatch.fnmatch(path.rsplit("/", 1)[-1], body.removeprefix("**/"))
        if hit:
            result = not negated
    return result


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = set().union(*(context_sources(s.name) for s in SERVICES))
    for source in copied:
        assert not ignored(source, patterns), f"{source} is copied but ignored"
    for other in (".venv", ".git", ".kizuna", "tests/unit", "services/cli", "bench"):
        assert ignored(other, patterns), f"{other} would enter the build context"
    assert ignored("services/kit/src/kizuna_kit.egg-info", patterns)
    assert ignored("services/kit/src/kizuna_kit/__pycache__", patterns)
