"""POST /v1/events: histories at once, counters after the delay, events logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from pipelines.io import read_jsonl
from serving.settings import Settings


def test_a_click_enters_the_history_and_counters_wait_for_the_delay(
    client: TestClient, settings: Settings
) -> None:
    service = client.app.state.service  # type: ignore[attr-defined]
    t0 = int(service.live.state.clock_us) + 10**6
    ts = lambda us: f"{np.datetime64(us, 'us')}Z"  # noqa: E731
    body = {
        "user_id": "fresh-user",
        "query": "hotpot",
        "ts": ts(t0),
        "candidates": [{"item_id": str(i)} for i in service.live.state.items.ids[:5]],
    }
    rid = client.post("/v1/rank", json=body).json()["request_id"]
    item = str(service.live.state.items.ids[2])
    events = [
        {
            "type": "impression",
            "request_id": rid,
            "user_id": "fresh-user",
            "item_id": item,
            "position": 1,
        },
        {
            "type": "click",
            "request_id": rid,
            "user_id": "fresh-user",
            "item_id": item,
            "position": 1,
        },
        {
            "type": "order",
            "request_id": rid,
            "user_id": "fresh-user",
            "item_id": item,
            "position": 1,
        },
    ]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 200 and r.json() == {"accepted": 3, "duplicates": 0}
    hist = client.get("/v1/users/fresh-user/history").json()["history"]
    assert [h["item_id"] for h in hist] == [item] and hist[0]["ordered"] and hist[0]["ts_us"] == t0

    def ui_clicks(t: int) -> float:
        with service.live.lock:
            f = service.live.main.featurize(
                user_id="fresh-user", query="hotpot", t_us=t, item_ids=[item]
            )
        names = [x.name for x in service.live.main.spec.numeric]
        return float(f.num[0, names.index("ui_clicks_all")])

    delay = service.live.state.cfg.counters.delay_s * 10**6
    assert ui_clicks(t0 + 10**6) == 0  # the event's time plus the delay has not passed
    assert ui_clicks(t0 + delay + service.live.state.cfg.counters.bucket_s * 10**6) == 1
    logged = read_jsonl(settings.log_dir, "events").records
    assert [e["type"] for e in logged[-3:]] == ["impression", "click", "order"]
    assert all(e["known_request"] for e in logged[-3:])


def test_events_of_unserved_rankings_are_refused_unless_imports_are_allowed(
    client: TestClient, settings_for: Any, small_registry: Path, tmp_path: Path, open_client: Any
) -> None:
    body = {"events": [{"type": "click", "request_id": "never-served", "user_id": 7, "item_id": 8}]}
    r = client.post("/v1/events", json=body)
    assert r.status_code == 422
    assert r.json()["detail"][0] == {
        "field": "events.0.request_id",
        "message": "events.0.request_id 'never-served' is not a ranking this server served "
        "(or it has expired)",
        "type": "unknown_request",
    }
    assert 'ranker_events_refused_total{reason="unknown_request"}' in client.get("/metrics").text
    s = settings_for(small_registry, tmp_path / "imports", accept_unserved_events=True)
    with open_client(s) as c:
        assert c.post("/v1/events", json=body).status_code == 200
        assert read_jsonl(s.log_dir, "events").records[-1]["known_request"] is False
