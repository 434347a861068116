"""Wait until the BentoML model store holds the model the tier serves (``PZONE_MODEL_TAG``), then exit 0.

The tier cannot start without a champion (``bentoml serve`` resolves its ``BentoModel`` at start-up), and a fresh
deployment has none until the first retrain has packaged one. Run before the server, this turns "crash, back off,
crash" into one quiet wait: Kubernetes runs it as the model pod's init container, compose before ``bentoml serve``.

    python -m pzone_model.wait_for_model [--interval-s 10] [--timeout-s 0]

Exit status: 0 once the model is there, 1 when ``--timeout-s`` (0: none) passed first, 2 for bad options.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

from pzone_model.settings import Settings

logger = logging.getLogger("pzone.model.wait")


def find_model(tag: str) -> str | None:
    """The full tag the store resolves ``tag`` to, or None while it holds no such model yet.

    The trainer imports a model into the same store while this polls it: a model folder whose ``model.yaml`` is not
    written yet makes BentoML refuse the whole listing, which means "not yet", not "broken"."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        return None
    except BentoMLException as exc:
        logger.debug("the model store is being written (%s); looking again", exc)
        return None


def wait_for_model(
    tag: str,
    *,
    interval_s: float,
    timeout_s: float,
    find: Callable[[str], str | None] = find_model,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Poll the store every ``interval_s`` until ``tag`` resolves; its full tag, or None after ``timeout_s`` (> 0)."""
    deadline = clock() + timeout_s if timeout_s > 0 else None
    announced = False
    while True:
        found = find(tag)
        if found is not None:
            logger.info("model store holds %s", found)
            return found
        if not announced:
            logger.info("no %s in the model store yet (it appears after the first retrain); waiting", tag)
            announced = True
        if deadline is not None and clock() + interval_s > deadline:
            return None
        sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pzone_model.wait_for_model", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--interval-s", type=float, default=10.0, help="seconds between looks at the store")
    parser.add_argument("--timeout-s", type=float, default=0.0, help="give up after this long (0: never)")
    args = parser.parse_args(argv)
    if args.interval_s <= 0 or args.timeout_s < 0:
        parser.error("--interval-s must be > 0 and --timeout-s >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tag = Settings().model_tag
    if wait_for_model(tag, interval_s=args.interval_s, timeout_s=args.timeout_s) is None:
        logger.error("no %s in the model store after %g s", tag, args.timeout_s)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
