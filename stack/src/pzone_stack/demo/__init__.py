"""`pzone demo`: the whole circle on one machine, in rounds.

The embedded broker, the ingest worker, the API and web UI (photos processed in-process), a simulated fleet and
virtual clients photographing it; each round uploads photos, retrains through the same code as `pzone retrain`
(`dvc repro` on a copy of the project under ``$PZONE_DATA_DIR/demo-project``, with demo-sized params, so the user's
``params.yaml`` is never touched), promotes or keeps, and measures the live accuracy of the model that answered
during the round on that round's photos.

* :mod:`.plan` — sizes, the fleet's behaviour, the demo's params, the results table (pure);
* :mod:`.project` — the demo's copy of the project;
* :mod:`.model_tier` — `bentoml serve` as a subprocess;
* :mod:`.rounds` — the run: stack, photos, retrain, rollout, live accuracy;
* :mod:`.command` — the command.

The run (:func:`.rounds.run_demo`) is imported from :mod:`.rounds` where it is used: it loads the API's and the
simulator's modules, which `pzone`'s other commands, and the tests of the pure parts, need not wait for.
"""

from pzone_stack.demo.command import command
from pzone_stack.demo.plan import Plan, RoundResult, demo_params, make_plan, results_table
from pzone_stack.demo.project import make_project, merge

__all__ = [
    "Plan",
    "RoundResult",
    "command",
    "demo_params",
    "make_plan",
    "make_project",
    "merge",
    "results_table",
]
