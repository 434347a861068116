"""AWS Lambda entry point: ``pzone_ingest.handler.handler`` behind the IoT rule

    SELECT *, topic(2) AS zone_id, topic(3) AS topic_device_id, timestamp() AS received_at FROM 'pzone/+/+/tilt'

One event is one message; a list of such events is processed as one batch. Invalid messages become dead letters
and never fail the rest; only a database failure raises (so the rule's error action keeps the message).
"""

from __future__ import annotations

import json
import logging
from functools import cache
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from pzone.db.engine import make_engine
from pzone.telemetry import Limits, limits_from
from pzone_ingest.batch import process_batch
from pzone_ingest.messages import from_iot_event
from pzone_ingest.secrets import fetch_database_url
from pzone_ingest.settings import Settings

logger = logging.getLogger("pzone.ingest.lambda")


@cache
def _runtime() -> tuple[Engine, Limits]:
    # Built on the first invocation and reused while the Lambda container stays warm; nothing happens at import.
    settings = Settings()
    url = settings.sqlalchemy_url
    if settings.database_url is None and settings.database_secret_arn:
        url = fetch_database_url(settings.database_secret_arn)
    return make_engine(url, pool_size=1, max_overflow=0), limits_from(settings)


def handler(event: Any, context: Any = None) -> dict[str, int]:
    engine, limits = _runtime()
    events = event if isinstance(event, list) else [event]
    try:
        result = process_batch(engine, [from_iot_event(e) for e in events], limits, source="lambda")
    except OperationalError:
        # Maybe a rotated password or a moved endpoint: build the engine (and read the secret) anew next time.
        _runtime.cache_clear()
        engine.dispose()
        raise
    summary = result.as_dict()
    logger.info(json.dumps({"msg": "ingest batch", **summary}))
    return summary
