"""A/B experiments: a TOML file, users assigned to variants by a salted hash, and team-draft
interleaving of two models.

    name = "transformer-vs-lgbm"
    salt = "2026-11"
    mode = "ab"            # or "interleave" (exactly two variants)
    [[variants]]
    name = "control"
    model = "lgbm"
    weight = 50
    [[variants]]
    name = "treatment"
    model = "transformer"
    weight = 50

Assignment is deterministic: the same user gets the same variant in every worker and every
restart, and changing the salt reshuffles users for a new experiment.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Variant:
    name: str
    model: str
    weight: float


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    mode: str  # "ab" | "interleave"
    variants: tuple[Variant, ...]

    def assign(self, user_id: str) -> Variant:
        """The user's variant: a salted SHA-256 of the user id, cut by cumulative weight."""
        digest = hashlib.sha256(f"{self.salt}:{user_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        total = sum(v.weight for v in self.variants)
        acc = 0.0
        for v in self.variants:
            acc += v.weight / total
            if u < acc:
                return v
        return self.variants[-1]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "salt": self.salt,
            "mode": self.mode,
            "variants": [
                {"name": v.name, "model": v.model, "weight": v.weight} for v in self.variants
            ],
        }


def two_arm_toml(
    name: str, salt: str, mode: str, control: str, treatment: str, comment: str = ""
) -> str:
    """The experiment file of a 50/50 test of two models (variants `control` and `treatment`)."""
    head = f"# {comment}\n" if comment else ""
    arms = "".join(
        f'[[variants]]\nname = "{v}"\nmodel = "{m}"\nweight = 50\n'
        for v, m in (("control", control), ("treatment", treatment))
    )
    return f'{head}name = "{name}"\nsalt = "{salt}"\nmode = "{mode}"\n{arms}'


def load_experiment(path: Path) -> Experiment:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"experiment file {path}: {e}") from e
    problems = [k for k in ("name", "salt", "variants") if k not in data]
    if problems:
        raise ValueError(f"experiment file {path}: missing {', '.join(problems)}")
    mode = data.get("mode", "ab")
    if mode not in ("ab", "interleave"):
        raise ValueError(f"experiment file {path}: mode must be 'ab' or 'interleave'")
    variants = []
    for v in data["variants"]:
        if not {"name", "model"} <= set(v):
            raise ValueError(f"experiment file {path}: each variant needs a name and a model")
        weight = float(v.get("weight", 1))
        if weight <= 0:
            raise ValueError(f"experiment file {path}: variant {v['name']} needs a weight > 0")
        variants.append(Variant(str(v["name"]), str(v["model"]), weight))
    if len({v.name for v in variants}) != len(variants) or not variants:
        raise ValueError(f"experiment file {path}: variants need distinct names")
    if mode == "interleave" and len(variants) != 2:
        raise ValueError(f"experiment file {path}: interleaving needs exactly two variants")
    return Experiment(str(data["name"]), str(data["salt"]), mode, tuple(variants))


def team_draft(a: list[str], b: list[str], rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Team-draft interleaving (Radlinski, Kurup and Joachims 2008) of two rankings of the same
    items: the team with fewer picks (a coin flip on ties) adds its best item not yet shown.
    Returns the interleaved items and, for each, the team ("a" or "b") that contributed it."""
    shown: set[str] = set()
    items: list[str] = []
    teams: list[str] = []
    ia = ib = 0
    count = {"a": 0, "b": 0}
    n = len(set(a) | set(b))
    while len(items) < n:
        pick_a = count["a"] < count["b"] or (count["a"] == count["b"] and rng.random() < 0.5)
        ranking, team = (a, "a") if pick_a else (b, "b")
        idx = ia if pick_a else ib
        while idx < len(ranking) and ranking[idx] in shown:
            idx += 1
        if idx >= len(ranking):  # this team has nothing left: the other picks
            ranking, team = (b, "b") if pick_a else (a, "a")
            idx = ib if pick_a else ia
            while idx < len(ranking) and ranking[idx] in shown:
                idx += 1
        item = ranking[idx]
        shown.add(item)
        items.append(item)
        teams.append(team)
        count[team] += 1
        if team == "a":
            ia = idx + 1
        else:
            ib = idx + 1
    return items, teams
