"""POST /v1/rank: rankings, server-side features, model choice, ONNX scores equal the
framework's, and the log of served rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from pipelines.features.state import FeatureState
from pipelines.io import read_jsonl
from ranker.inputs import baseline_inputs, lgbm_columns, lgbm_matrix
from ranker.scoring import load
from serving.settings import Settings


def _items(state_dir: Path, n: int, seed: int = 0) -> list[str]:
    ids = FeatureState.load(state_dir).items.ids
    return [str(i) for i in np.random.default_rng(seed).choice(ids, n, replace=False)]


def _body(settings: Settings, n: int = 30, **kw: object) -> dict[str, object]:
    st = FeatureState.load(settings.state)
    ts = (st.clock_us or 0) // 10**6 + 3600
    return {
        "user_id": "u0001",
        "query": "hotpot",
        "ts": f"{np.datetime64(ts, 's')}Z",
        "context": {"lat": 31.23, "lon": 121.47, "device": "ios"},
        "candidates": [{"item_id": i} for i in _items(settings.state, n)],
        **kw,
    }


def test_rank_returns_every_candidate_ranked_by_score(
    client: TestClient, settings: Settings
) -> None:
    body = _body(settings)
    r = client.post("/v1/rank", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "transformer" and out["version"] == "v1" and out["variant"] == "default"
    assert len(out["request_id"]) >= 8 and out["took_ms"] > 0
    assert [i["rank"] for i in out["items"]] == list(range(1, 31))
    scores = [i["score"] for i in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(i["item_id"] for i in out["items"]) == sorted(
        c["item_id"] for c in body["candidates"]
    )  # type: ignore[union-attr]


def test_top_k_model_choice_and_request_id(client: TestClient, settings: Settings) -> None:
    r = client.post("/v1/rank", json=_body(settings, top_k=5, model="lgbm", request_id="abc-1"))
    out = r.json()
    assert r.status_code == 200 and out["model"] == "lgbm" and out["variant"] == "explicit"
    assert out["request_id"] == "abc-1" and len(out["items"]) == 5


def test_served_scores_equal_the_framework_scores_on_the_same_features(
    client: TestClient, settings: Settings, small_registry: Path
) -> None:
    """The ONNX model inside the server scores exactly like torch / LightGBM would on the
    features the server computed (parity through the whole service)."""
    body = _body(settings, n=40)
    service = client.app.state.service  # type: ignore[attr-defined]
    for name in ("transformer", "lgbm", "rerank", "ctr"):
        out = client.post("/v1/rank", json={**body, "model": name}).json()
        served = {i["item_id"]: i["score"] for i in out["items"]}
        ids = [c["item_id"] for c in body["candidates"]]  # type: ignore[union-attr]
        with service.live.lock:
            f = service.live.main.featurize(
                user_id="u0001",
                query="hotpot",
                t_us=service.live.state.clock_us,
                item_ids=ids,
                lat=31.23,
                lon=121.47,
                context={"device": "ios"},
            )
        lm = load(small_registry / name)
        booster = getattr((lm.baseline or lm).scorer, "booster", None)
        base_scores = None
        if booster is not None:  # LightGBM, or the baseline under a re-ranker
            _, keep, _ = lgbm_columns((lm.baseline or lm).features)
            base_scores = booster.predict(lgbm_matrix(f.num, f.cat, keep), raw_score=True)
        if name == "lgbm":
            ref = base_scores
        elif name == "ctr":
            ref = lm.scorer.params.score(f.num)  # type: ignore[attr-defined]
        else:
            import torch

            num = f.num
            if base_scores is not None:  # re-ranker: the baseline's score and rank, live
                num = np.concatenate(
                    [num, baseline_inputs(base_scores, np.array([0, len(ids)]))], 1
                )
            t = lambda a, dt=torch.float32: torch.as_tensor(a[None], dtype=dt)  # noqa: E731
            with torch.no_grad():
                ref = lm.scorer.model(  # type: ignore[attr-defined]
                    t(num),
                    t(f.cat, torch.long),
                    torch.ones(1, len(ids), dtype=torch.bool),  # type: ignore[misc]
                    t(f.hist_num),
                    t(f.hist_cat, torch.long),
                    torch.ones(1, len(f.hist_num), dtype=torch.bool),
                )[0].numpy()
        got = np.array([served[i] for i in ids])
        assert np.abs(got - ref).max() <= 1e-4, name


def test_unknown_items_and_new_users_are_ranked_not_refused(
    client: TestClient, settings: Settings
) -> None:
    body = _body(settings, n=5)
    body["user_id"] = 987654321  # an int id, never seen
    body["candidates"] = [*body["candidates"], {"item_id": "brand-new-item"}, {"item_id": 42}]  # type: ignore[misc]
    r = client.post("/v1/rank", json=body)
    assert r.status_code == 200 and len(r.json()["items"]) == 7
    assert {i["item_id"] for i in r.json()["items"]} >= {"brand-new-item", 42}


def test_client_features_and_history_change_the_scores(
    client: TestClient, settings: Settings
) -> None:
    body = _body(settings, n=10)
    base = {i["item_id"]: i["score"] for i in client.post("/v1/rank", json=body).json()["items"]}
    first = body["candidates"][0]["item_id"]  # type: ignore[index]
    priced = json.loads(json.dumps(body))
    priced["candidates"][0]["features"] = {"avg_price": 9999.0}
    moved = {i["item_id"]: i["score"] for i in client.post("/v1/rank", json=priced).json()["items"]}
    assert moved[first] != base[first]
    hist = dict(
        body, history=[first, {"item_id": body["candidates"][1]["item_id"], "ordered": True}]
    )  # type: ignore[index]
    assert (
        client.post("/v1/rank", json=hist).json()["items"]
        != client.post("/v1/rank", json=body).json()["items"]
    )


def test_every_served_ranking_is_logged(client: TestClient, settings: Settings) -> None:
    rids = [
        client.post("/v1/rank", json=_body(settings, top_k=3)).json()["request_id"]
        for _ in range(3)
    ]
    rows = read_jsonl(settings.log_dir, "rankings").records
    assert [r["request_id"] for r in rows][-3:] == rids
    last = rows[-1]
    assert (
        last["variant"] == "default" and len(last["items"]) == 3 and len(last["candidates"]) == 30
    )
    assert last["user_id"] == "u0001" and last["t_us"] > 0
