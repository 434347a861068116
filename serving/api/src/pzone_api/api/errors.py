"""The API's error answers as its OpenAPI document declares them: their bodies, and ``responses=`` for the routes.

FastAPI documents a route's success and its request-validation 422 only; every other status a route answers is
declared from here (dicts merged with ``|``), with its body. The bodies are FastAPI's ``{"detail": ...}``: a
sentence (sessions, limits), a refusal with a stable ``code`` (photos, objects), or the list of a 422.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

Responses = dict[int | str, dict[str, Any]]


class Message(BaseModel):
    detail: str = Field(description="What went wrong, for people.")


class Refusal(BaseModel):
    code: str = Field(description="Stable machine code: not_found, too_large, unsupported_type, …")
    reason: str = Field(description="For people.")
    index: int | None = Field(None, description="In a batch: the position of the photo refused.")


class Refused(BaseModel):
    detail: Refusal


class FieldError(BaseModel):
    """One entry of a 422 list, as FastAPI's request validation makes them."""

    type: str
    loc: list[str | int]
    msg: str
    input: Any = None
    ctx: dict[str, Any] | None = None


class Invalid(BaseModel):
    detail: list[FieldError] | Refusal = Field(
        description="The fields at fault (request validation), or a refusal with its code."
    )


def refused(status: int, description: str) -> Responses:
    """A refusal with a code (``{"detail": {"code", "reason"}}``)."""
    return {status: {"model": Refused, "description": description}}


def message(status: int, description: str) -> Responses:
    """An answer whose ``detail`` is a sentence."""
    return {status: {"model": Message, "description": description}}


# A JSON body that is not UTF-8, or a multipart body that does not parse: FastAPI answers 400 before the route.
BAD_BODY = message(400, "The body could not be parsed (not UTF-8 JSON, or a broken multipart form).")
SIGNED_IN = message(401, "Not signed in, or the session expired: log in (again).")
CSRF = message(403, "The X-CSRF-Token header is missing, or is not the session's csrf_token.")
OPERATOR = SIGNED_IN | message(403, "Operator role required.")
CSRF_OPERATOR = message(403, "Operator role required, or the X-CSRF-Token header is missing or wrong.")
SAME_ORIGIN = message(403, "Cross-site request refused: the Origin header does not match this site.")
TOO_MANY: Responses = {
    429: {
        "model": Message,
        "description": "Too many attempts: wait the Retry-After seconds.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    }
}
# 422 of the photo routes: request validation, or a refusal of the photo's (no_target, empty, bad image, …).
INVALID_PHOTO: Responses = {
    422: {"model": Invalid, "description": "Invalid request, or a photo refused with its code."}
}


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's own 422 (the errors, each with the input it refused), written with ASCII escapes: an input holding
    a lone UTF-16 surrogate ("\\ud800", which JSON allows and UTF-8 cannot encode) is refused, not a 500."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
