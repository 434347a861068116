"""Stage `register`: the trained model becomes a new version of the registered model, alias ``challenger``; it
takes alias ``champion`` only if it beats the champion's macro-F1 on the same test split by ``register.margin``
(the first model must clear ``register.min_macro_f1``).

Everything is checked before the registry is touched, and a failure after the version was created deletes it
again, so a crash never leaves a half-registered model. The decision and its numbers go to
``reports/decision.json`` and to the training run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from pzone_pipelines.params import ParamsError, load_params, read_mapping, section
from pzone_pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS


class RegisterError(RuntimeError):
    """The inputs of the register stage are missing or inconsistent; nothing was registered."""


@dataclass(frozen=True)
class GateParams:
    margin: float
    min_macro_f1: float

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> GateParams:
        try:
            params = cls(margin=float(raw["margin"]), min_macro_f1=float(raw["min_macro_f1"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise RegisterError(f"params.yaml register section is incomplete or not numeric: {exc}") from None
        if not (0 <= params.margin < 1 and 0 <= params.min_macro_f1 <= 1):
            raise RegisterError("register.margin must be in [0, 1) and register.min_macro_f1 in [0, 1]")
        return params


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger_macro_f1: float
    champion_macro_f1: float | None
    champion_version: str | None
    margin: float
    min_macro_f1: float
    n_test: int


def decide(challenger: dict[str, Any], champion: dict[str, Any], params: GateParams) -> Decision:
    """Promote or keep. Both sets of metrics must come from the same test split (the evaluate stage ensures it)."""
    score = _finite(challenger.get("macro_f1"), "challenger macro_f1")
    n_test = int(challenger.get("n_test", 0))

    def verdict(
        promote: bool, reason: str, best: float | None = None, version: str | None = None
    ) -> Decision:
        return Decision(promote, reason, score, best, version, params.margin, params.min_macro_f1, n_test)

    if not champion.get("exists", False):
        if score >= params.min_macro_f1:
            return verdict(True, "first model: clears the minimum bar")
        return verdict(False, "first model: below the minimum bar")
    best = _finite(champion.get("macro_f1"), "champion macro_f1")
    version = str(champion.get("version"))
    if score < params.min_macro_f1:
        return verdict(False, "below the minimum bar", best, version)
    if score >= best + params.margin:
        return verdict(True, "beats the champion by the margin", best, version)
    return verdict(False, "does not beat the champion by the margin", best, version)


def current_champion(client: Any, model_name: str) -> str | None:
    """The version the registry's champion alias points at now, or None."""
    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except Exception as exc:  # MlflowException: no such model or alias
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
            or "not found" in str(exc).lower()
        ):
            return None
        raise


def guard_stale(decision: Decision, champion: dict[str, Any], now: str | None) -> Decision:
    """Never promote on a comparison with another champion than the registry's current one.

    The evaluate stage measured the champion of its time; if only the gate's params changed, DVC re-runs register
    without evaluate, and the champion may have moved since (or appeared: the first model registered by an earlier
    run). Such a challenger is registered but not promoted; re-running evaluate makes the comparison fair again.
    """
    evaluated = str(champion["version"]) if champion.get("exists") else None
    if evaluated == now or not decision.promote:
        return decision
    return replace(
        decision,
        promote=False,
        reason=f"the champion changed since evaluate (evaluated against {evaluated}, now {now}): "
        "not promoted; run `dvc repro -f evaluate` to compare",
    )


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RegisterError(f"{what} is missing or not a number") from None
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise RegisterError(f"{what} must be a number in [0, 1], got {value!r}")
    return number


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return read_mapping(path, f"{what} ({path})", "run the earlier stages first", RegisterError)


def register(
    run: dict[str, Any], decision: Decision, *, model_name: str, client: Any, register_model: Any
) -> dict[str, Any]:
    """Create the version, move the aliases; undo the version if anything after its creation fails."""
    for key in ("run_id", "model_uri"):
        if not run.get(key):
            raise RegisterError(f"models/run.json lacks {key}")
    tags = {
        "dataset_hash": str(run.get("dataset_hash", "")),
        "test_macro_f1": f"{decision.challenger_macro_f1:.6f}",
        "run_id": str(run["run_id"]),
    }
    version = register_model(run["model_uri"], model_name, tags=tags)
    try:
        client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version.version)
        if decision.promote:
            if decision.champion_version is not None:
                client.set_registered_model_alias(
                    model_name, PREVIOUS_CHAMPION_ALIAS, decision.champion_version
                )
            client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version.version)
    except BaseException:
        client.delete_model_version(model_name, version.version)
        raise
    return {"model_name": model_name, "version": str(version.version)}


def main(
    run_file: Annotated[Path, typer.Option("--run", help="The train stage's run record.")] = Path(
        "models/run.json"
    ),
    metrics_file: Annotated[Path, typer.Option("--metrics", help="Challenger metrics.")] = Path(
        "reports/metrics.json"
    ),
    champion_file: Annotated[
        Path, typer.Option("--champion", help="Champion metrics on the same test split.")
    ] = Path("reports/champion_metrics.json"),
    out: Annotated[Path, typer.Option(help="Where the decision is written.")] = Path("reports/decision.json"),
    params_file: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
) -> None:
    """Register the trained model as challenger; promote it to champion only if it wins the gate."""
    from rich.console import Console

    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import configure_mlflow

    console = Console(stderr=True)
    try:
        gate = GateParams.from_mapping(section(load_params(params_file), "register"))
        run = _read_json(run_file, "the run record")
        champion = _read_json(champion_file, "champion metrics")
        decision = decide(_read_json(metrics_file, "challenger metrics"), champion, gate)
    except (RegisterError, ParamsError) as exc:
        console.print(f"[red]register failed, nothing registered:[/red] {exc}")
        raise typer.Exit(1) from None

    settings = Settings()
    configure_mlflow(settings)
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    decision = guard_stale(decision, champion, current_champion(client, settings.mlflow_model_name))
    version = register(
        run,
        decision,
        model_name=settings.mlflow_model_name,
        client=client,
        register_model=mlflow.register_model,
    )
    record = {**asdict(decision), **version, "decided_at": datetime.now(UTC).isoformat(timespec="seconds")}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    client.set_tag(run["run_id"], "pzone.promoted", str(decision.promote).lower())
    client.set_tag(run["run_id"], "pzone.decision", decision.reason)
    client.log_dict(run["run_id"], record, "decision.json")
    verdict = (
        "[green]promoted to champion[/green]" if decision.promote else "[yellow]kept as challenger[/yellow]"
    )
    console.print(
        f"{settings.mlflow_model_name} v{version['version']} {verdict}: {decision.reason} "
        f"(macro-F1 {decision.challenger_macro_f1:.4f} vs champion {decision.champion_macro_f1})"
    )


if __name__ == "__main__":
    from pzone.cli.common import run_command

    run_command(main)
