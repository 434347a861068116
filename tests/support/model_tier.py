"""A stand-in for the model tier, speaking its contract (:mod:`pzone.tier_contract`) without a model.

It answers every image of ``POST /classify`` with one verdict, keeps the images of each request, and can be stopped
and started on the same port to test the front's "pending, then filled in" behaviour.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pzone.tier_contract import CLASSIFY_PATH, IMAGES_FIELD, answer, result_item
from pzone.tilt import TILT_CLASSES
from tests.support.services import free_port

MODEL_VERSION = "stand-in-1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != CLASSIFY_PATH:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + body
        )
        images = [
            part
            for part in message.iter_parts()
            if part.get_param("name", header="content-disposition") == IMAGES_FIELD
        ]
        self.server.requests += 1  # type: ignore[attr-defined]
        stand_in: ModelTierStandIn = self.server.stand_in  # type: ignore[attr-defined]
        stand_in.received.append([part.get_payload(decode=True) for part in images])
        results = [
            result_item(stand_in.label, stand_in.probs(), stand_in.model_version, stand_in.image_size)
            for _ in images
        ]
        payload = json.dumps(answer(results)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass


class ModelTierStandIn:
    """Answers every image with ``label`` (0.9) as ``model_version`` (and ``image_size`` when set, as the real tier
    does); all may be changed while it runs (a new model version deployed). ``received``: each request's images."""

    def __init__(
        self, model_version: str = MODEL_VERSION, label: str = "upright", image_size: int | None = None
    ) -> None:
        self.port = free_port()
        self.model_version = model_version
        self.label = label
        self.image_size = image_size
        self.received: list[list[bytes]] = []
        self._server: ThreadingHTTPServer | None = None

    def probs(self) -> dict[str, float]:
        others = [name for name in TILT_CLASSES if name != self.label]
        return {self.label: 0.9, others[0]: 0.07, others[1]: 0.03}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return self._server.requests if self._server else 0  # type: ignore[attr-defined]

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.requests = 0  # type: ignore[attr-defined]
        self._server.stand_in = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
