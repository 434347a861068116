"""A stand-in for the model tier (its real BentoML service comes with a later issue), speaking the same contract.

``POST /classify`` with multipart ``images`` → ``{"results": [{"label", "probs", "model_version"}, ...]}``. It can be
stopped and started on the same port to test the front's "pending, then filled in" behaviour.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.services import free_port

MODEL_VERSION = "stand-in-1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        if self.path != "/classify":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + self.headers["content-type"].encode() + b"\r\n\r\n" + body
        )
        images = [
            part
            for part in message.iter_parts()
            if part.get_param("name", header="content-disposition") == "images"
        ]
        self.server.requests += 1  # type: ignore[attr-defined]
        results = [
            {
                "label": "upright",
                "probs": {"upright": 0.9, "tilted": 0.07, "fallen": 0.03},
                "model_version": MODEL_VERSION,
            }
            for _ in images
        ]
        payload = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: object) -> None:  # keep test output clean
        pass


class ModelTierStandIn:
    def __init__(self) -> None:
        self.port = free_port()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return self._server.requests if self._server else 0  # type: ignore[attr-defined]

    def start(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.requests = 0  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
