"""Model kinds by name: the one registry the CLI, training, scoring, export and serving use.

Adding a kind is one module (see ``ranker.kinds.base.Kind``) and its line here.
"""

from __future__ import annotations

from ranker.kinds import ctr, lgbm, transformer
from ranker.kinds.base import Kind

KINDS: dict[str, Kind] = {
    "lgbm": lgbm.LgbmKind(),
    "transformer": transformer.TransformerKind(),
    "ctr": ctr.CtrKind(),
}


def get_kind(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {sorted(KINDS)}") from None
