"""Models: listing, the authenticated reload, corrupted models rejected, health, metrics, docs."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serving.settings import Settings


def test_models_health_readiness_and_metrics(client: TestClient) -> None:
    m = client.get("/v1/models").json()
    assert {x["name"] for x in m["models"]} == {"lgbm", "transformer", "rerank", "ctr"}
    by_name = {x["name"]: x for x in m["models"]}
    assert by_name["rerank"]["reranker_of"] == "lgbm/v1"
    assert by_name["transformer"]["reranker_of"] is None
    assert [x["name"] for x in m["models"] if x["default"]] == ["transformer"]
    assert m["device"].startswith("CPU")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/rank", json={"user_id": "u", "query": "q", "candidates": [{"item_id": "x"}]})
    text = client.get("/metrics").text
    assert 'ranker_requests_total{model="transformer",variant="default"}' in text
    assert "ranker_request_seconds_bucket" in text


def test_openapi_documents_the_api_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/rank",
        "/v1/events",
        "/v1/models",
        "/v1/models/reload",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    rank_schema = spec["components"]["schemas"]["RankRequest"]
    assert rank_schema["examples"][0]["query"] == "hotpot"
    assert (
        "RankResponse"
        in spec["paths"]["/v1/rank"]["post"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]["$ref"]
    )
    assert client.get("/docs").status_code == 200


def test_reload_needs_the_token(client: TestClient) -> None:
    assert client.post("/v1/models/reload").status_code == 401
    assert (
        client.post("/v1/models/reload", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    r = client.post("/v1/models/reload", headers={"Authorization": "Bearer test-admin-token"})
    assert r.status_code == 200 and r.json()["generation"] == 1


def _copy_registry(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_corrupted_model_is_rejected_while_the_old_keeps_serving(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    reg = _copy_registry(small_registry, tmp_path / "reg")
    s = settings_for(reg, tmp_path / "logs")
    with open_client(s) as c:
        # A fixed time: with the server's clock a counter bucket may close between the calls.
        body = {
            "user_id": "u",
            "query": "q",
            "ts": "2020-01-01T00:00:00Z",
            "candidates": [{"item_id": "x"}, {"item_id": "y"}],
        }
        before = c.post("/v1/rank", json=body).json()
        # A new version whose ONNX file is damaged: its sha256 no longer matches.
        v2 = reg / "transformer" / "v2"
        shutil.copytree(reg / "transformer" / "v1", v2)
        (v2 / "model.onnx").write_bytes((v2 / "model.onnx").read_bytes()[:-100])
        r = c.post("/v1/models/reload", headers={"Authorization": "Bearer test-admin-token"})
        assert r.status_code == 409 and "sha256" in r.json()["error"]
        after = c.post("/v1/rank", json=body).json()
        assert after["version"] == "v1" and [i["score"] for i in after["items"]] == [
            i["score"] for i in before["items"]
        ]


def test_reload_swaps_models_with_no_failed_request(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    reg = _copy_registry(small_registry, tmp_path / "reg")
    s = settings_for(reg, tmp_path / "logs")
    with open_client(s) as c:
        body = {"user_id": "u", "query": "q", "candidates": [{"item_id": "x"}, {"item_id": "y"}]}
        shutil.copytree(reg / "transformer" / "v1", reg / "transformer" / "v2")  # a new version
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = c.post("/v1/rank", json=body)
                statuses.append(r.status_code)
                versions.add(r.json().get("version", "?"))

        t = threading.Thread(target=hammer)
        t.start()
        r = c.post("/v1/models/reload", headers={"Authorization": "Bearer test-admin-token"})
        for _ in range(20):
            c.post("/v1/rank", json=body)
        stop.set()
        t.join()
        assert r.status_code == 200
        assert set(statuses) == {200} and len(statuses) > 3
        assert c.post("/v1/rank", json=body).json()["version"] == "v2"


def test_settings_come_from_the_environment(
    monkeypatch: object, small_registry: Path, tmp_path: Path
) -> None:
    import pytest

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.delenv("RANKER_CLIENT_TOKEN", raising=False)
    mp.setenv("RANKER_REGISTRY", str(small_registry))
    mp.setenv("RANKER_STATE", str(tmp_path))
    mp.setenv("RANKER_MAX_CANDIDATES", "7")
    mp.setenv("RANKER_ADMIN_TOKEN", "secret")
    with pytest.raises(ValueError, match="no client token"):
        Settings.from_env()
    mp.setenv("RANKER_CLIENT_TOKEN", "client-secret")
    s = Settings.from_env()
    assert (
        s.max_candidates == 7
        and s.admin_token == "secret"
        and s.store_path == s.log_dir / "store.sqlite"
    )
    mp.delenv("RANKER_STATE")
    import pytest as _pytest

    with _pytest.raises(RuntimeError, match="RANKER_STATE"):
        Settings.from_env()
