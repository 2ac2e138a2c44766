"""A served app over the small registry and the small world's state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

TOKEN = "test-admin-token"
CLIENT = "test-client-token"
CLIENT_AUTH = {"Authorization": f"Bearer {CLIENT}"}


def make_settings(registry: Path, state: Path, log_dir: Path, **kw: object) -> Settings:
    return Settings(
        registry=registry,
        state=state,
        log_dir=log_dir,
        admin_token=TOKEN,
        client_token=CLIENT,
        threads=1,
        **kw,  # type: ignore[arg-type]
    )


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
def open_client() -> Callable[[Settings], TestClient]:
    """open_client(settings): a test client of the app, sending the client token."""

    def make(settings: Settings) -> TestClient:
        return TestClient(create_app(settings), headers=CLIENT_AUTH)

    return make


@pytest.fixture(scope="module")
def module_client(
    small_registry: Path, small_lists: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app for a module whose tests leave nothing a later test reads (refused requests):
    each app start loads every model and the state, about 0.9 s on the CI machine."""
    log_dir = tmp_path_factory.mktemp("module_app") / "logs"
    settings = make_settings(small_registry, small_lists / "state", log_dir)
    with TestClient(create_app(settings), headers=CLIENT_AUTH) as c:
        yield c


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=CLIENT_AUTH) as c:
        yield c
