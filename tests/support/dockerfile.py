"""Dockerfiles without a container engine: a small parser, and a builder stage run here as written.

The parser knows what the house's Dockerfiles use (stages, COPY/RUN/ENV/WORKDIR/USER/LABEL/CMD, line continuations);
:func:`run_stage` runs a stage's COPY and uv RUN lines (its base stages' first) with the container's paths mapped into a
local folder, so a test can look inside the environment an image would get.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pzone_model import SERVICE
from tests.support.paths import REPO

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
    "pzone-model": ["bentoml", "serve", SERVICE, "--host", "0.0.0.0", "--port", "3000"],
    "pzone-model-bento": ["bentoml", "serve", "/app/bento", "--host", "0.0.0.0", "--port", "3000"],
    "pzone-ingest": ["pzone", "ingest"],
    "pzone-migrations": ["pzone", "db", "upgrade"],
}
# What no Dockerfile, compose file or manifest may carry as a literal.
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY|CREDENTIAL", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


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
