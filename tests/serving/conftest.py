"""A served app over the small registry and the small world's state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

TOKEN = "test-admin-token"


def make_settings(registry: Path, state: Path, log_dir: Path, **kw: object) -> Settings:
    return Settings(
        registry=registry, state=state, log_dir=log_dir, admin_token=TOKEN, threads=1, **kw
    )  # type: ignore[arg-type]


@pytest.fixture
def settings_for(small_lists: Path) -> object:
    """settings_for(registry, log_dir, **options): settings over the small world's state."""

    def make(registry: Path, log_dir: Path, **kw: object) -> Settings:
        return make_settings(registry, small_lists / "state", log_dir, **kw)

    return make


@pytest.fixture
def settings(small_registry: Path, small_lists: Path, tmp_path: Path) -> Settings:
    return make_settings(small_registry, small_lists / "state", tmp_path / "logs")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c
