"""The model registry's promotion rules: the gate (:func:`decide`, with ``params.yaml``'s ``register:`` knobs), and
the registry's aliases moved for a decided model (:func:`register`, :func:`move_aliases`).

A candidate becomes a version of the registered model with alias ``challenger``; it takes alias ``champion`` (and the
one it replaces ``previous-champion``) only if it beats the champion's macro-F1 on the same test split by
``register.margin`` (the first model must clear ``register.min_macro_f1``). Everything is checked before the
registry is touched, and a failure after a version was created deletes it again and puts the aliases back, so a
crash never leaves a half-registered model. A library: the `propose` stage decides with it and touches nothing;
only the promotion path (``pzone promote``, which `pzone retrain` runs) moves the aliases.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pzone.errors import UserError
from pzone_pipelines.params import section
from pzone_pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS

ALIASES = (CHALLENGER_ALIAS, CHAMPION_ALIAS, PREVIOUS_CHAMPION_ALIAS)
# The exit code of a promotion the gate refused (`pzone promote`; `pzone retrain` reads it as "kept").
REFUSED_EXIT_CODE = 3

log = logging.getLogger(__name__)


class RegisterError(UserError, RuntimeError):
    """The gate's inputs are missing or inconsistent; nothing was registered."""


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

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GateParams:
        """The ``register:`` section of a whole params.yaml."""
        return cls.from_mapping(section(dict(params), "register"))


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
    version = str(champion.get("version"))
    if champion.get("comparable") is False:
        return verdict(
            False, "the champion has another label set: not comparable on this test split", None, version
        )
    best = _finite(champion.get("macro_f1"), "champion macro_f1")
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

    The evaluate stage measured the champion of its time; if only the gate's params changed, DVC re-runs propose
    without evaluate, and the champion may have moved since (or appeared: the first model promoted after that
    evaluate). Such a comparison proposes nothing; re-running evaluate makes it fair again.
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


def alias_targets(client: Any, model_name: str) -> dict[str, str | None]:
    """The version each of the registry's aliases points at now (None: not set)."""
    from mlflow.exceptions import MlflowException

    targets: dict[str, str | None] = {}
    for alias in ALIASES:
        try:
            targets[alias] = str(client.get_model_version_by_alias(model_name, alias).version)
        except MlflowException:  # no such model, or no such alias
            targets[alias] = None
    return targets


def restore_aliases(client: Any, model_name: str, targets: Mapping[str, str | None]) -> list[str]:
    """Point every alias back at ``targets`` (as :func:`alias_targets` read them); an unset one is removed. Best
    effort, alias by alias: it runs while another error propagates, so it logs and returns the aliases it could not
    put back instead of raising."""
    from mlflow.exceptions import MlflowException

    failed: list[str] = []
    for alias, version in targets.items():
        try:
            if version is not None:
                client.set_registered_model_alias(model_name, alias, version)
            else:
                with contextlib.suppress(MlflowException):  # not set now either: nothing to remove
                    client.delete_registered_model_alias(model_name, alias)
        except Exception as exc:
            log.error("could not put alias %s of %s back to %s: %s", alias, model_name, version, exc)
            failed.append(alias)
    return failed


def move_aliases(client: Any, model_name: str, version: str, decision: Decision) -> dict[str, str | None]:
    """``challenger`` to ``version``; ``champion`` too (the one it replaces becomes ``previous-champion``) when the
    decision promotes. Returns the aliases' targets before, to undo with :func:`restore_aliases`; a failure part
    way puts them back before it propagates."""
    before = alias_targets(client, model_name)
    try:
        client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)
        if decision.promote:
            replaced = before[CHAMPION_ALIAS]
            if replaced is not None and replaced != version:
                client.set_registered_model_alias(model_name, PREVIOUS_CHAMPION_ALIAS, replaced)
            client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    except BaseException:
        restore_aliases(client, model_name, before)
        raise
    return before


def register(
    run: dict[str, Any], decision: Decision, *, model_name: str, client: Any, register_model: Any
) -> dict[str, Any]:
    """Create the version of ``run``'s model, move the aliases (:func:`move_aliases`); a failure after the version's
    creation deletes it again. Returns ``{"model_name", "version", "aliases_before"}``."""
    for key in ("run_id", "model_uri"):
        if not run.get(key):
            raise RegisterError(f"the run record lacks {key}")
    tags = {
        "dataset_hash": str(run.get("dataset_hash", "")),
        "test_macro_f1": f"{decision.challenger_macro_f1:.6f}",
        "run_id": str(run["run_id"]),
    }
    version = register_model(run["model_uri"], model_name, tags=tags)
    try:
        before = move_aliases(client, model_name, str(version.version), decision)
    except BaseException:
        client.delete_model_version(model_name, version.version)
        raise
    return {"model_name": model_name, "version": str(version.version), "aliases_before": before}
