"""Dependency aliases used by the routes (one place, as in the full-stack FastAPI template)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from pzone.storage import LocalObjectStore, S3ObjectStore
from pzone_api.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_db(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_store(request: Request) -> LocalObjectStore | S3ObjectStore:
    return request.app.state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
DbDep = Annotated[Session, Depends(get_db)]
StoreDep = Annotated[LocalObjectStore | S3ObjectStore, Depends(get_store)]

# --- auth (sessions, current user, roles, CSRF) ------------------------------------------------------------------------
