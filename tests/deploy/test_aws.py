"""The AWS side of the ingest: ingest_lambda/template.yaml (cfn-lint, the rule's SQL, the device policy, the wiring
of function, rule, permission and dead-letter queue) and ingest_lambda/build_zip.py (the zip holds the ingest package
and pzone-core's base install only, and its handler stores readings when run from the zip alone)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import marshal
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import yaml
from sqlalchemy import create_engine, text

from pzone.telemetry import tilt_topic
from pzone_firmware.wire import status_topic
from tests.support.paths import REPO
from tests.support.s3 import FAKE_AWS_ENV, MotoServer

TEMPLATE = REPO / "ingest_lambda" / "template.yaml"
BUILD_ZIP = REPO / "ingest_lambda" / "build_zip.py"
RULE_SQL = "SELECT *, topic(2) AS zone_id, topic(3) AS topic_device_id, timestamp() AS received_at FROM 'pzone/+/+/tilt'"
STATUS_RULE_SQL = (
    "SELECT *, topic(2) AS zone_id, topic(3) AS topic_device_id, topic(4) AS kind, timestamp() AS received_at "
    "FROM 'pzone/+/+/status'"
)
FORBIDDEN = ("torch", "fastapi", "starlette", "typer", "amqtt", "bentoml", "mlflow")
ZIP_LIMIT_BYTES = 50 * 1024 * 1024  # Lambda's limit for a zip uploaded directly
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024  # and for the unzipped code


# --- reading the template -------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms: ``!Ref x`` -> {"Ref": x}, ``!GetAtt a.b`` -> {"Fn::GetAtt": [a, b]}."""


def _cfn_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    assert isinstance(loaded, dict)
    return loaded


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def _one(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    found = _resources(template, kind)
    assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
    name, resource = next(iter(found.items()))
    return name, resource["Properties"]


def _sub_text(value: Any) -> str:
    """The text of a ``!Sub`` (or a plain string), with ``${!x}`` unescaped to what AWS receives: ``${x}``."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
    assert isinstance(value, str), value
    return value.replace("${!", "${")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("cfn-lint")
    command = str(exe) if exe.exists() else shutil.which("cfn-lint")
    assert command, "cfn-lint is a dev dependency (uv sync)"
    return subprocess.run([command, str(path)], capture_output=True, text=True, timeout=120, check=False)


# --- cfn-lint ------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_template_passes_cfn_lint_without_errors_or_warnings() -> None:
    result = _cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.unit
def test_cfn_lint_fails_a_broken_copy(tmp_path: Path) -> None:
    broken = TEMPLATE.read_text()
    broken = broken.replace("Runtime: python3.11", "Runtime: python2.7", 1)  # a retired runtime
    broken = broken.replace("QueueUrl: !Ref DeadLetterQueue", "QueueUrl: !Ref NoSuchQueue", 1)  # dangling Ref
    assert broken != TEMPLATE.read_text()
    copy = tmp_path / "template.yaml"
    copy.write_text(broken)
    result = _cfn_lint(copy)
    assert result.returncode != 0
    assert "NoSuchQueue" in result.stdout
    assert "python2.7" in result.stdout


# --- the topic rule, the function and their wiring -----------------------------------------------------------------
@pytest.mark.unit
def test_rule_sql_is_the_contracts(template: dict[str, Any]) -> None:
    rules = {
        r["Properties"]["TopicRulePayload"]["Sql"]: r
        for r in _resources(template, "AWS::IoT::TopicRule").values()
    }
    assert sorted(rules) == sorted([RULE_SQL, STATUS_RULE_SQL])
    for rule in rules.values():
        assert rule["Properties"]["TopicRulePayload"]["AwsIotSqlVersion"] == "2016-03-23"
        assert rule["Properties"]["TopicRulePayload"]["RuleDisabled"] is False
    # The same statement the handler and the architecture document describe.
    assert RULE_SQL in (REPO / "ingest_lambda" / "src" / "pzone_ingest" / "handler.py").read_text()
    assert RULE_SQL in (REPO / "docs" / "architecture.md").read_text()
    assert STATUS_RULE_SQL in (REPO / "docs" / "architecture.md").read_text()


@pytest.mark.unit
def test_rules_invoke_the_function_and_keep_errors_in_the_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    function_name, _ = _one(template, "AWS::Serverless::Function")
    queue_name, queue = _one(template, "AWS::SQS::Queue")
    rules = _resources(template, "AWS::IoT::TopicRule")
    assert len(rules) == 2
    permissions = _resources(template, "AWS::Lambda::Permission")
    for rule_name, rule in rules.items():
        payload = rule["Properties"]["TopicRulePayload"]
        assert payload["Actions"] == [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [function_name, "Arn"]}}}]
        sqs = payload["ErrorAction"]["Sqs"]
        assert sqs["QueueUrl"] == {"Ref": queue_name}
        # The error action's role may send to that queue and nothing else, and only IoT may assume it.
        role_name = sqs["RoleArn"]["Fn::GetAtt"][0]
        role = template["Resources"][role_name]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "Service": "iot.amazonaws.com"
        }
        statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
        assert statements == [
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": [queue_name, "Arn"]}}
        ]
        # IoT may invoke the function, for this rule only (one permission per rule).
        (permission,) = [
            p["Properties"]
            for p in permissions.values()
            if p["Properties"]["SourceArn"] == {"Fn::GetAtt": [rule_name, "Arn"]}
        ]
        assert permission["Principal"] == "iot.amazonaws.com"
        assert permission["Action"] == "lambda:InvokeFunction"
        assert permission["FunctionName"] == {"Fn::GetAtt": [function_name, "Arn"]}
    assert len(permissions) == 2
    # The queue is encrypted and keeps messages as long as SQS allows.
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 1209600


@pytest.mark.unit
def test_function_matches_the_zip_and_the_settings(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, function = _one(template, "AWS::Serverless::Function")
    build_zip = _load_build_zip()
    # Handler path = zip layout (pzone_ingest at the zip's root); the code is the zip build_zip.py writes.
    assert function["Handler"] == "pzone_ingest.handler.handler"
    module_name, attr = function["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module_name), attr))
    assert (TEMPLATE.parent / function["CodeUri"]).resolve() == build_zip.DEFAULT_OUTPUT
    # The wheels are built for the runtime's Python and architecture.
    defaults = build_zip.parse_args([])
    assert function["Runtime"] == f"python{defaults.python_version}"
    assert function["Architectures"] == [defaults.platform.split("-", 1)[0]]
    # Private subnets and a security group, from parameters; bounded concurrency (= database connections).
    assert function["VpcConfig"] == {
        "SubnetIds": {"Ref": "PrivateSubnetIds"},
        "SecurityGroupIds": [{"Ref": "LambdaSecurityGroupId"}],
    }
    assert template["Parameters"]["PrivateSubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert function["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
    # Database credentials: the secret's ARN, never a URL, and Settings reads that very variable.
    variables = function["Environment"]["Variables"]
    assert variables["PZONE_DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
    assert "PZONE_DATABASE_URL" not in variables
    from pzone_ingest.settings import Settings

    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pzone-ingest-AbCdEf"
    monkeypatch.delenv("PZONE_DATABASE_URL", raising=False)
    monkeypatch.setenv("PZONE_DATABASE_SECRET_ARN", arn)
    assert Settings().database_secret_arn == arn
    # Logs go to a log group with a retention.
    log_group_name, log_group = _one(template, "AWS::Logs::LogGroup")
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": log_group_name}}
    assert log_group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


@pytest.mark.unit
def test_function_role_is_least_privilege(template: dict[str, Any]) -> None:
    _, function = _one(template, "AWS::Serverless::Function")
    role_name = function["Role"]["Fn::GetAtt"][0]
    role = template["Resources"][role_name]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "lambda.amazonaws.com"
    }
    assert "ManagedPolicyArns" not in role
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    by_sid = {}
    for statement in statements:
        if "Fn::If" in statement:  # the optional KMS statement
            statement = statement["Fn::If"][1]
        by_sid[statement["Sid"]] = statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
    assert by_sid["DatabaseSecret"]["Action"] == "secretsmanager:GetSecretValue"
    assert by_sid["DatabaseSecret"]["Resource"] == {"Ref": "DatabaseSecretArn"}
    assert by_sid["Logs"]["Resource"] == {"Fn::GetAtt": ["IngestLogGroup", "Arn"]}
    assert by_sid["DeadLetters"]["Resource"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    # Only the network-interface actions (which take no resource restriction) are on "*".
    star = {a for s in by_sid.values() if s["Resource"] == "*" for a in _as_list(s["Action"])}
    assert star <= {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeSubnets",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }


@pytest.mark.unit
def test_outputs_the_rest_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in (
        "IngestFunctionArn",
        "DeadLetterQueueUrl",
        "DeadLetterQueueArn",
        "DevicePolicyName",
        "TopicRuleName",
        "IotDataEndpointHint",
    ):
        assert name in outputs, name
    assert "iot:Data-ATS" in outputs["IotDataEndpointHint"]["Value"]


# --- the device policy ---------------------------------------------------------------------------------------------
def _policy_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    _, policy = _one(template, "AWS::IoT::Policy")
    statements = policy["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" for s in statements)
    return list(statements)


def _topic_patterns(statements: list[dict[str, Any]], action: str) -> list[str]:
    patterns = []
    for statement in statements:
        if action in _as_list(statement["Action"]):
            for resource in _as_list(statement["Resource"]):
                arn = _sub_text(resource)
                assert ":topic/" in arn, arn
                patterns.append(arn.split(":topic/", 1)[1])
    return patterns


def _allows(patterns: list[str], client_id: str, topic: str) -> bool:
    """IoT policy matching: ``*`` matches any characters (``/`` too); policy variables are the connection's."""
    return any(fnmatch.fnmatchcase(topic, p.replace("${iot:ClientId}", client_id)) for p in patterns)


@pytest.mark.unit
def test_device_connects_only_as_itself(template: dict[str, Any]) -> None:
    statements = _policy_statements(template)
    connect = [s for s in statements if "iot:Connect" in _as_list(s["Action"])]
    assert len(connect) == 1
    resources = [_sub_text(r) for r in _as_list(connect[0]["Resource"])]
    assert len(resources) == 1
    assert resources[0].endswith(("client/${iot:Connection.Thing.ThingName}", "client/${iot:ClientId}"))
    assert connect[0]["Condition"] == {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
    # Nothing else: no wildcard actions, nothing the firmware does not do (it subscribes to nothing).
    actions = {a for s in statements for a in _as_list(s["Action"])}
    assert actions == {"iot:Connect", "iot:Publish", "iot:RetainPublish"}


@pytest.mark.unit
def test_device_publishes_only_its_own_topics(template: dict[str, Any]) -> None:
    statements = _policy_statements(template)
    publish = _topic_patterns(statements, "iot:Publish")
    retain = _topic_patterns(statements, "iot:RetainPublish")
    for pattern in publish + retain:
        assert "${iot:ClientId}" in pattern or "${iot:Connection.Thing.ThingName}" in pattern, pattern
        assert "#" not in pattern and not pattern.endswith("*"), pattern
    me, other = "scooter-0001", "scooter-0002"
    # Its readings and its (retained) status in any zone, as the firmware builds them: allowed.
    for zone in ("zone-1", "zone-7"):
        assert _allows(publish, me, tilt_topic(zone, me))
        assert _allows(publish, me, status_topic(zone, me))
        assert _allows(retain, me, status_topic(zone, me))
        # Another device's topics, or the broad ones: refused.
        assert not _allows(publish, me, tilt_topic(zone, other))
        assert not _allows(publish, me, status_topic(zone, other))
    assert not _allows(retain, me, tilt_topic("zone-1", me))  # readings are never retained
    for topic in ("pzone/#", "pzone/zone-1/#", "pzone/zone-1/scooter-00012/tilt", "other/scooter-0001/tilt"):
        assert not _allows(publish, me, topic), topic


# --- the build script ----------------------------------------------------------------------------------------------
def _load_build_zip() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pzone_build_zip", BUILD_ZIP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.unit
def test_build_zip_spots_forbidden_packages(tmp_path: Path) -> None:
    build_zip = _load_build_zip()
    assert set(build_zip.FORBIDDEN) >= set(FORBIDDEN)
    (tmp_path / "sqlalchemy").mkdir()
    (tmp_path / "sqlalchemy-2.1.0.dist-info").mkdir()
    assert build_zip.forbidden_in(build_zip.installed_names(tmp_path)) == []
    (tmp_path / "Typer-0.15.0.dist-info").mkdir()
    (tmp_path / "fastapi").mkdir()
    (tmp_path / "mlflow").mkdir()
    assert build_zip.forbidden_in(build_zip.installed_names(tmp_path)) == ["fastapi", "mlflow", "typer"]


def _run_build(output: Path, python_version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD_ZIP), "--output", str(output), "--python-version", python_version],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
    )


# Runs in a fresh interpreter with no site-packages (-I -S): the standard library and the unzipped code only.
_INVOKE = r"""
import json, sys, sysconfig
sys.path.insert(0, sys.argv[1])
from pzone_ingest.handler import handler
results = [handler(event, None) for event in json.loads(sys.stdin.read())]
stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
foreign = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not module.__file__.startswith(sys.argv[1])
    and not any(module.__file__.startswith(p) for p in stdlib)
)
print(json.dumps({"results": results, "foreign": foreign, "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def lambda_zip(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The zip, built for this interpreter's Python version, and its unzipped folder."""
    if shutil.which("uv") is None:
        pytest.fail("build_zip.py needs the uv command")
    work = tmp_path_factory.mktemp("lambda")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = _run_build(work / "pzone-ingest-lambda.zip", version)
    assert result.returncode == 0, result.stderr
    assert "MB zipped" in result.stdout
    unzipped = work / "unzipped"
    with zipfile.ZipFile(work / "pzone-ingest-lambda.zip") as zf:
        zf.extractall(unzipped)
    yield work / "pzone-ingest-lambda.zip", unzipped


@pytest.mark.integration
def test_zip_holds_the_ingest_package_and_core_base_install_only(lambda_zip: tuple[Path, Path]) -> None:
    path, _ = lambda_zip
    assert path.stat().st_size < ZIP_LIMIT_BYTES
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert sum(i.file_size for i in infos) < UNZIPPED_LIMIT_BYTES
    top = {n.split("/", 1)[0] for n in names}
    assert {"pzone", "pzone_ingest", "sqlalchemy", "pydantic_settings", "psycopg", "psycopg_binary"} <= top
    assert "pzone_ingest/handler.py" in names
    lowered = {re.split(r"[-.]", t, maxsplit=1)[0].lower() for t in top}
    for forbidden in FORBIDDEN:
        assert forbidden not in lowered, forbidden
    for extra in ("paho", "prometheus_client", "alembic", "rich", "numpy", "PIL", "uvicorn"):
        assert extra not in top, extra
    assert not [n for n in names if n.startswith("bin/")]
    # Bytecode ahead of time (Lambda's /var/task is read-only): one .pyc per module, built for this interpreter,
    # hash-based without source checks (flags 0b01: no timestamps, so reproducible), naming /var/task paths.
    sources = {n for n in names if n.endswith(".py")}
    pycs = {n for n in names if n.endswith(".pyc")}
    tag = sys.implementation.cache_tag
    assert all("/__pycache__/" in f"/{n}" and n.endswith(f".{tag}.pyc") for n in pycs)
    compiled = {n.replace("__pycache__/", "").replace(f".{tag}.pyc", ".py") for n in pycs}
    assert "pzone_ingest/handler.py" in compiled and "sqlalchemy/engine/base.py" in compiled
    assert len(compiled & sources) > 0.95 * len(sources)
    with zipfile.ZipFile(path) as zf:
        handler_pyc = zf.read(f"pzone_ingest/__pycache__/handler.{tag}.pyc")
    assert int.from_bytes(handler_pyc[4:8], "little") == 0b01
    code = marshal.loads(handler_pyc[16:])
    assert code.co_filename == "/var/task/pzone_ingest/handler.py"
    # psycopg's binary wheel for Linux (libpq inside), not a source build.
    assert any(re.match(r"psycopg_binary/_psycopg\.cpython-3\d+-x86_64-linux-gnu\.so$", n) for n in names)


@pytest.mark.integration
@pytest.mark.slow
def test_zip_is_reproducible(lambda_zip: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = lambda_zip
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = _run_build(tmp_path / "again.zip", version)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "again.zip").read_bytes() == first.read_bytes()


def _base_python() -> str:
    """The interpreter under this virtual environment, so that its site-packages stay out of the picture."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


@pytest.mark.integration
def test_zipped_handler_stores_readings_with_the_secret_from_secrets_manager(
    lambda_zip: tuple[Path, Path], pg_url: str, s3_server: MotoServer
) -> None:
    _, unzipped = lambda_zip
    # The secret as RDS writes it, in moto's Secrets Manager; trust auth ignores the password.
    database = pg_url.rsplit("/", 1)[1]
    secrets = boto3.client("secretsmanager", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")
    arn = secrets.create_secret(
        Name="pzone/ingest-db",
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "username": "postgres",
                "password": "unused-with-trust-auth",
                "host": "127.0.0.1",
                "port": 5432,
                "dbname": database,
            }
        ),
    )["ARN"]
    now = datetime.now(UTC)
    received_ms = int(now.timestamp() * 1000)

    def event(device: str, seq: int, ax: float, az: float) -> dict[str, Any]:
        # What the rule hands the function: the payload's fields plus topic(2), topic(3), timestamp().
        return {
            "v": 1,
            "device_id": device,
            "seq": seq,
            "ts": int(now.timestamp()),
            "ax": ax,
            "ay": 0.0,
            "az": az,
            "battery": 87,
            "zone_id": "zone-1",
            "topic_device_id": device,
            "received_at": received_ms,
        }

    events = [
        event("scooter-0001", 1, 0.0, 1.0),  # one event: upright
        [
            event("scooter-0002", 7, 1.0, 0.0),
            {"v": 1, "zone_id": "zone-1", "topic_device_id": "scooter-0002"},
        ],
        event("scooter-0001", 1, 0.0, 1.0),  # the rule's redelivery: a duplicate, not a row
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(unzipped.parent),
        "PZONE_DATABASE_SECRET_ARN": arn,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": s3_server.endpoint_url,
        "AWS_CONFIG_FILE": "/nonexistent/pzone-test-aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pzone-test-aws-credentials",
        **FAKE_AWS_ENV,
    }
    result = subprocess.run(
        [_base_python(), "-I", "-S", "-c", _INVOKE, str(unzipped)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["foreign"] == [], "modules from outside the zip and the standard library"
    assert not {m.split(".")[0] for m in answer["modules"]} & set(FORBIDDEN)
    one, batch, again = answer["results"]
    assert one == {
        "received": 1,
        "inserted": 1,
        "duplicates": 0,
        "dead_letters": 0,
        "seq_jumps": 0,
        "epoch_switches": 0,
        "statuses": 0,
        "alarms_opened": 0,
        "alarms_closed": 0,
    }
    assert (batch["received"], batch["inserted"], batch["dead_letters"], batch["alarms_opened"]) == (
        2,
        1,
        1,
        1,
    )
    assert (again["inserted"], again["duplicates"]) == (0, 1)

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT device_id, zone_id, seq, state FROM sensor_readings ORDER BY device_id")
            ).all()
            assert [tuple(r) for r in rows] == [
                ("scooter-0001", "zone-1", 1, "upright"),
                ("scooter-0002", "zone-1", 7, "fallen"),
            ]
            dead = conn.execute(text("SELECT source, device_id FROM ingest_dead_letters")).all()
            assert [tuple(r) for r in dead] == [("lambda", "scooter-0002")]
            alarms = (
                conn.execute(text("SELECT device_id FROM alarms WHERE closed_at IS NULL")).scalars().all()
            )
            assert alarms == ["scooter-0002"]
    finally:
        engine.dispose()
