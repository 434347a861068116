"""Stage `propose`: would the model just trained pass the promotion gate? The gate's verdict on the evaluate stage's
numbers goes to ``reports/proposal.json`` (a DVC metrics file: ``dvc exp show`` lists it per experiment) and to the
training run's tags; the registry's aliases and the serving store are left alone.

The data scientist's `dvc repro` and `dvc exp run` end here. Only the promotion path (``pzone promote``, which
`pzone retrain` runs for the platform) registers a model under an alias the model tier reads, after re-evaluating it
and the champion on the same frozen test split with the same gate (:mod:`pzone_pipelines.register`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from pzone_pipelines.params import load_params, read_mapping
from pzone_pipelines.register import GateParams, RegisterError, decide, guard_stale

PROPOSAL_TAG = "pzone.proposal"
PROPOSAL_REASON_TAG = "pzone.proposal_reason"


def propose(
    run: dict[str, Any],
    challenger: dict[str, Any],
    champion: dict[str, Any],
    gate: GateParams,
    current_champion: str | None,
) -> dict[str, Any]:
    """The proposal: the gate's decision on the evaluate stage's numbers, never a promotion when the registry's
    champion is not the one evaluate measured (``current_champion``: the registry's now)."""
    if not run.get("run_id"):
        raise RegisterError("models/run.json lacks run_id: run the train stage first")
    decision = guard_stale(decide(challenger, champion, gate), champion, current_champion)
    return {**asdict(decision), "run_id": str(run["run_id"])}


def _read(path: Path, what: str) -> dict[str, Any]:
    return read_mapping(path, f"{what} ({path})", "run the earlier stages first", RegisterError)


def main(
    run_file: Annotated[Path, typer.Option("--run", help="The train stage's run record.")] = Path(
        "models/run.json"
    ),
    metrics_file: Annotated[Path, typer.Option("--metrics", help="The trained model's test metrics.")] = Path(
        "reports/metrics.json"
    ),
    champion_file: Annotated[
        Path, typer.Option("--champion", help="The champion's metrics on the same test split.")
    ] = Path("reports/champion_metrics.json"),
    out: Annotated[Path, typer.Option(help="Where the proposal is written.")] = Path("reports/proposal.json"),
    params_file: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
) -> None:
    """Say whether the trained model would be promoted (the gate of `pzone promote`); promote nothing."""
    from rich.console import Console

    from pzone_pipelines.register import current_champion
    from pzone_pipelines.settings import Settings
    from pzone_pipelines.tracking import configure_mlflow

    gate = GateParams.from_params(load_params(params_file))
    run = _read(run_file, "the run record")
    challenger = _read(metrics_file, "the trained model's metrics")
    champion = _read(champion_file, "the champion's metrics")

    settings = Settings()
    configure_mlflow(settings)
    from mlflow import MlflowClient

    client = MlflowClient()
    proposal = propose(run, challenger, champion, gate, current_champion(client, settings.mlflow_model_name))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(proposal, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    client.set_tag(proposal["run_id"], PROPOSAL_TAG, str(proposal["promote"]).lower())
    client.set_tag(proposal["run_id"], PROPOSAL_REASON_TAG, proposal["reason"])
    client.log_dict(proposal["run_id"], proposal, "proposal.json")
    verdict = "would be promoted" if proposal["promote"] else "would be kept out"
    Console(stderr=True).print(
        f"run {proposal['run_id']} {verdict}: {proposal['reason']} (macro-F1 "
        f"{proposal['challenger_macro_f1']:.4f} vs champion {proposal['champion_macro_f1']}); "
        f"nothing registered: `pzone promote --run {proposal['run_id']}` takes it through the gate"
    )


if __name__ == "__main__":
    from pzone.cli.common import run_command

    run_command(main)
