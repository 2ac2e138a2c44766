"""Events must belong to a ranking this server served, and happen when they could have.

Each event is checked against its ranking in the store: the ranking exists (and is younger
than ``served_ttl_s``), the user is the one it was served to, the item was one of its
candidates, the position within its length, and the time not before the ranking nor more
than the allowed clock skew ahead of the server's clock. A call with any bad event is refused
whole (a 422 naming each bad field); nothing of it is stored. Refusals are counted by reason
in ``/metrics``. ``--accept-unserved-events`` accepts events of rankings served elsewhere
(imports); they are stored with no query or variant, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving import metrics
from serving.bounds import clip
from serving.requests import ServingError, to_us
from serving.schemas import Event
from serving.store_rows import SEP, NewEvent, Served

MAX_REPORTED = 20  # problems listed in one error body


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str  # a metric label: unknown_request, user_mismatch, ...
    message: str


def check_events(
    events: list[Event],
    served: dict[str, Served],
    now_us: int,
    max_skew_us: int,
    accept_unserved: bool,
) -> list[NewEvent]:
    """Store rows for ``events``; raises a 422 ``ServingError`` if any event is refused."""
    rows: list[NewEvent] = []
    problems: list[Problem] = []
    for j, e in enumerate(events):
        at = f"events.{j}"
        s = served.get(e.request_id)
        user, item = str(e.user_id), str(e.item_id)
        t_us = to_us(e.ts) if e.ts is not None else (s.t_us if s is not None else now_us)
        found = _problems(at, e, s, user, item, t_us, now_us, max_skew_us, accept_unserved)
        if found:
            problems += found
            continue
        query, variant = (s.query, s.variant) if s is not None else ("", "")
        # Derived key: one impression, click and order of an item per ranking.
        key = e.event_id if e.event_id is not None else SEP.join((e.type, e.request_id, item))
        rows.append((e.type, e.request_id, user, item, e.position, t_us, query, variant, key))
    if problems:
        for p in problems:
            metrics.EVENTS_REFUSED.labels(p.reason).inc()
        shown = problems[:MAX_REPORTED]
        raise ServingError(
            422,
            f"{len(problems)} event(s) refused: " + "; ".join(p.message for p in shown[:3]),
            detail=[{"field": p.field, "message": p.message, "type": p.reason} for p in shown],
        )
    return rows


def _problems(
    at: str,
    e: Event,
    s: Served | None,
    user: str,
    item: str,
    t_us: int,
    now_us: int,
    max_skew_us: int,
    accept_unserved: bool,
) -> list[Problem]:
    out: list[Problem] = []
    if t_us > now_us + max_skew_us:
        out.append(
            Problem(
                f"{at}.ts",
                "future_ts",
                f"{at}.ts is {(t_us - now_us) / 1e6:.0f} s ahead of the server clock "
                f"(at most {max_skew_us / 1e6:.0f} s)",
            )
        )
    if s is None:
        if not accept_unserved:
            out.append(
                Problem(
                    f"{at}.request_id",
                    "unknown_request",
                    f"{at}.request_id {clip(e.request_id)} is not a ranking this server served "
                    "(or it has expired)",
                )
            )
        return out
    if user != s.user_id:
        out.append(
            Problem(
                f"{at}.user_id",
                "user_mismatch",
                f"{at}.user_id {clip(user)} is not the user the ranking was served to",
            )
        )
    if s.candidates and item not in s.candidates:
        out.append(
            Problem(
                f"{at}.item_id",
                "item_not_candidate",
                f"{at}.item_id {clip(item)} was not among the ranking's candidates",
            )
        )
    if s.n_candidates and e.position is not None and e.position > s.n_candidates:
        out.append(
            Problem(
                f"{at}.position",
                "position_out_of_range",
                f"{at}.position {e.position} is past the ranking's {s.n_candidates} candidates",
            )
        )
    if t_us < s.t_us:
        out.append(
            Problem(f"{at}.ts", "before_ranking", f"{at}.ts is before the ranking it belongs to")
        )
    return out
