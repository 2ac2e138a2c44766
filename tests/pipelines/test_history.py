"""The array-backed history store against a plain reference: a sorted Python list per user,
the way the store kept histories before it held them as fixed-width arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.features.history import HistoryStore


class ReferenceHistory:
    """Per user, events sorted by (time, position), later equal keys after earlier ones,
    trimmed to the newest ``2 * max_len``."""

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.events: dict[str, list[tuple[int, int, str, bool]]] = {}

    def add(self, user: str, t: int, pos: int, item: str, ordered: bool) -> None:
        if self.max_len == 0:
            return
        ev = self.events.setdefault(user, [])
        at = len(ev)
        while at > 0 and (ev[at - 1][0], ev[at - 1][1]) > (t, pos):
            at -= 1
        ev.insert(at, (t, pos, item, ordered))
        del ev[: max(0, len(ev) - 2 * self.max_len)]

    def mark_ordered(self, user: str, t: int, item: str) -> None:
        ev = self.events.get(user, [])
        for j in range(len(ev) - 1, -1, -1):
            if ev[j][2] == item and ev[j][0] == t:
                ev[j] = (*ev[j][:3], True)
                return
        self.add(user, t, 0, item, True)

    def lookup(self, user: str, t: int) -> list[tuple[str, int, bool]]:
        before = [e for e in self.events.get(user, []) if e[0] < t]
        return [(e[2], e[0], e[3]) for e in before[max(0, len(before) - self.max_len) :]]


def _as_lists(store: HistoryStore, users: list[str], times: list[int]):  # type: ignore[no-untyped-def]
    sq = store.lookup(np.array(users, dtype=object), np.array(times, dtype=np.int64))
    return [
        list(
            zip(
                sq.item_id[a:b].tolist(),
                sq.t_us[a:b].tolist(),
                sq.ordered[a:b].tolist(),
                strict=True,
            )
        )
        for a, b in zip(sq.offsets[:-1], sq.offsets[1:], strict=True)
    ]


@pytest.mark.parametrize("max_len", [0, 1, 3, 8])
def test_store_matches_the_reference_through_out_of_order_ties_trims_and_orders(
    max_len: int, tmp_path: Path
) -> None:
    rng = np.random.default_rng(max_len)
    store, ref = HistoryStore(max_len), ReferenceHistory(max_len)
    users = [f"u{k}" for k in range(12)]
    for step in range(60):
        n = int(rng.integers(1, 12))
        u = rng.choice(users, n).tolist()
        # Mostly increasing times, with late events and exact ties (same time, any position).
        t = (step * 10 + rng.integers(-25, 5, n)).tolist()
        pos = rng.integers(0, 4, n).tolist()
        items = [f"i{k}" for k in rng.integers(0, 30, n)]
        flags = (rng.random(n) < 0.2).tolist()
        store.add_many(
            np.array(u, dtype=object),
            np.array(t),
            np.array(pos),
            np.array(items, dtype=object),
            np.array(flags),
        )
        for e in zip(u, t, pos, items, flags, strict=True):
            ref.add(*e)
        if step % 7 == 3:  # an order reported on its own: of a stored click, or of none
            j = int(rng.integers(0, n))
            for s in (store, ref):
                s.mark_ordered(u[j], t[j], items[j])
                s.mark_ordered(u[j], t[j] + 1, "never-clicked")
        probe = rng.choice([*users, "nobody"], 8).tolist()
        when = (step * 10 + rng.integers(-30, 10, 8)).tolist()
        assert _as_lists(store, probe, when) == [
            ref.lookup(p, w) for p, w in zip(probe, when, strict=True)
        ]
        # One request at a time (the live path reads one row directly).
        assert _as_lists(store, probe[:1], when[:1]) == [ref.lookup(probe[0], when[0])]
    store.save(tmp_path / "h.parquet")
    again = HistoryStore.load(tmp_path / "h.parquet", max_len)
    everyone, late = [*users, "nobody"], [10**6] * 13
    assert _as_lists(again, everyone, late) == _as_lists(store, everyone, late)
    assert len(again) == len(store) == (0 if max_len == 0 else len(ref.events))
    assert store.stored() == {u: [(t, i, o) for t, _, i, o in ev] for u, ev in ref.events.items()}


def test_eviction_keeps_histories_and_item_ids_of_the_users_it_keeps() -> None:
    store = HistoryStore(max_len=4)
    for k in range(30):  # user k clicks item "i{k}" and the shared "x", at times 100 + k
        store.add_many(
            np.array([f"u{k}", f"u{k}"], dtype=object),
            np.array([100 + k, 100 + k]),
            np.array([0, 1]),
            np.array([f"i{k}", "x"], dtype=object),
            np.array([False, k % 2 == 0]),
        )
    assert store.evict_least_recent(5) == 25
    got = _as_lists(store, [f"u{k}" for k in range(30)], [10**6] * 30)
    assert got[:25] == [[]] * 25
    assert got[25:] == [
        [(f"i{k}", 100 + k, False), ("x", 100 + k, k % 2 == 0)] for k in range(25, 30)
    ]
    store.add("u0", 500, 0, "i0", False)  # a forgotten user comes back with a fresh history
    assert _as_lists(store, ["u0"], [501]) == [[("i0", 500, False)]]
