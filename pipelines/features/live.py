"""The online entry point: featurise one request against the live feature state.

``LiveFeaturizer.featurize`` is what the server calls for ``POST /v1/rank``; ``observe`` is
what it calls for ``POST /v1/events``. It runs the same ``transforms.featurize`` as the batch
pipeline, on a state the batch pipeline wrote and the events have kept current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.features.history import Sequences
from pipelines.features.state import Events, FeatureState
from pipelines.features.transforms import (
    Features,
    FeatureSpec,
    RequestFrame,
    feature_spec,
    featurize,
)
from pipelines.lists.manifest import Manifest


@dataclass
class HistoryEvent:
    """A behaviour-sequence event supplied by the client instead of the stored one."""

    item_id: str
    t_us: int | None = None  # None: the request's own time (age 0)
    ordered: bool = False


class LiveFeaturizer:
    def __init__(self, state: FeatureState, spec: FeatureSpec | None = None):
        self.state = state
        self.spec = spec or feature_spec(state.cfg, state)

    def schema_key(self) -> dict[str, Any]:
        """The schema of the features this featuriser gives, as a model's manifest states it
        (``Manifest.schema_key``): a model serves only requests featurised to its schema."""
        return Manifest(
            numeric=self.spec.numeric,
            categorical=self.spec.categorical,
            history_numeric=self.spec.history_numeric,
            history_categorical=self.spec.history_categorical,
            history_max_len=self.state.cfg.history.max_len,
        ).schema_key()

    def featurize(
        self,
        *,
        user_id: str,
        query: str,
        t_us: int,
        item_ids: Sequence[str],
        lat: float | None = None,
        lon: float | None = None,
        context: dict[str, str | None] | None = None,
        overrides: dict[str, np.ndarray] | None = None,
        history: Sequence[HistoryEvent] | None = None,
    ) -> Features:
        """Features of one request's candidates as of ``t_us`` (the clock moves forward to it)."""
        st = self.state
        st.advance(t_us)
        users = np.array([str(user_id)], dtype=object)
        queries = np.array([query], dtype=object)
        times = np.array([t_us], dtype=np.int64)
        items = np.array(item_ids, dtype=object)
        if not all(type(i) is str for i in items):  # the server sends str; other callers may not
            items = np.array([str(i) for i in item_ids], dtype=object)
        offsets = np.array([0, len(items)], dtype=np.int64)
        refs = st.items.refs(items)  # resolved once for the counters and the transforms
        look = st.lookup(users, queries, times, offsets, items, refs=refs)
        if history is not None:
            look.sequences = _client_sequence(history, t_us, st.cfg.history.max_len)
        frame = RequestFrame(
            t_us=times,
            user_id=users,
            query=queries,
            lat=np.array([np.nan if lat is None else lat]),
            lon=np.array([np.nan if lon is None else lon]),
            context={k: np.array([v], dtype=object) for k, v in (context or {}).items()},
            offsets=offsets,
            item_id=items,
            overrides=overrides,
            item_refs=refs,
        )
        return featurize(frame, look, st, self.spec)

    def observe(self, events: Events) -> None:
        self.state.observe(events)


def _client_sequence(history: Sequence[HistoryEvent], t_us: int, max_len: int) -> Sequences:
    """The client's history: events before the request, oldest first, the last max_len kept."""
    ev = [(t_us if h.t_us is None else h.t_us, str(h.item_id), bool(h.ordered)) for h in history]
    ev = [e for e in ev if e[0] <= t_us]
    ev.sort(key=lambda e: e[0])
    ev = ev[-max_len:] if max_len else []
    return Sequences(
        offsets=np.array([0, len(ev)], dtype=np.int64),
        item_id=np.array([e[1] for e in ev], dtype=object),
        t_us=np.array([e[0] for e in ev], dtype=np.int64),
        ordered=np.array([e[2] for e in ev], dtype=bool),
    )
