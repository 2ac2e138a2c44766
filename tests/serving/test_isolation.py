"""Per-variant state: with --isolate-variants, one variant's events never reach the other's
counters or histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def test_isolated_variants_keep_their_events_apart(
    open_client: Any, small_registry: Path, settings_for: Any, tmp_path: Path
) -> None:
    exp = tmp_path / "exp.toml"
    exp.write_text(
        'name = "iso"\nsalt = "s"\n[[variants]]\nname = "control"\nmodel = "lgbm"\n'
        '[[variants]]\nname = "treatment"\nmodel = "transformer"\n'
    )
    s = settings_for(small_registry, tmp_path / "logs", experiment=exp, isolate_variants=True)
    with open_client(s) as c:
        service = c.app.state.service  # type: ignore[attr-defined]
        users = {}
        for i in range(20):
            out = c.post(
                "/v1/rank",
                json={"user_id": f"p{i}", "query": "tea", "candidates": [{"item_id": "i001"}]},
            ).json()
            users.setdefault(out["variant"], (f"p{i}", out["request_id"]))
        (cu, crid), (tu, trid) = users["control"], users["treatment"]
        c.post(
            "/v1/events",
            json={
                "events": [{"type": "click", "request_id": crid, "user_id": cu, "item_id": "i001"}]
            },
        )
        control_state = service.live.variants["control"].state
        treatment_state = service.live.variants["treatment"].state
        import numpy as np

        far = np.array([2**62])
        assert list(control_state.history.lookup(np.array([cu], dtype=object), far).item_id) == [
            "i001"
        ]
        assert len(treatment_state.history.lookup(np.array([cu], dtype=object), far).item_id) == 0
        # The shared state (explicit model requests) sees everything.
        assert list(
            service.live.state.history.lookup(np.array([cu], dtype=object), far).item_id
        ) == ["i001"]
        del tu, trid
