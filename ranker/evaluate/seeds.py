"""Training-seed spread: one model trained under several seeds (``ranker train --seeds N``
publishes N versions), and whether a difference between two models exceeds what reseeding
alone moves.

The rule, stated in the report: model A beats B when A minus B (paired, same bootstrap) has
its 95% CI above zero under every seed pairing (the i-th seed of A against the i-th of B).
Otherwise, when the mean difference over seeds is no larger than either model's training-seed
standard deviation, the difference is "within the training-seed spread".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ranker.registry import resolve, versions

SEED_RULE = (
    "better (worse) only when the paired 95% CI is above (below) zero under every seed; "
    "within the training-seed spread when |mean difference| <= either model's seed s.d."
)


def expand_seeds(refs: list[str], n: int) -> list[str]:
    """Each ``REGISTRY/NAME`` becomes its latest ``n`` versions (oldest first); refs naming a
    version are refused, as are names with fewer than ``n`` versions."""
    out = []
    for spec in refs:
        ref = resolve(spec)
        if Path(spec).name == ref.version:
            raise ValueError(f"--seeds takes model names, not versions: {spec}")
        have = versions(ref.registry, ref.name)
        if len(have) < n:
            raise ValueError(f"{spec}: {len(have)} version(s), --seeds {n} needs {n}")
        out += [str(ref.registry / ref.name / v) for v in have[-n:]]
    return out


def seed_groups(names: list[str], registry_names: list[str]) -> dict[str, list[str]]:
    """Report model names grouped by their registry name, in order."""
    groups: dict[str, list[str]] = {}
    for shown, name in zip(names, registry_names, strict=True):
        groups.setdefault(name, []).append(shown)
    return groups


def spread(report: dict[str, Any], groups: dict[str, list[str]]) -> dict[str, Any]:
    primary = report["primary"]
    out = {}
    for group, members in groups.items():
        values = [report["metrics"][m][primary]["value"] for m in members]
        out[group] = {
            "models": members,
            "seeds": [report["models"][m].get("seed") for m in members],
            "values": values,
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        }
    return out


def seed_verdict(
    report: dict[str, Any], groups: dict[str, list[str]], comparison: Any
) -> dict[str, Any]:
    """Each group against the first, pairing seeds in order. ``comparison(report, metric,
    model, base)`` reads one paired difference from the report."""
    primary = report["primary"]
    sp = spread(report, groups)
    names = list(groups)
    base = names[0]
    outcomes, lines = {}, []
    for other in names[1:]:
        pairs = list(zip(groups[other], groups[base], strict=False))
        per_seed = [comparison(report, primary, a, b) for a, b in pairs]
        diffs = [d["diff"] for d in per_seed]
        mean = float(np.mean(diffs))
        if all(d["ci95"][0] > 0 for d in per_seed):
            outcome = "better under every seed"
        elif all(d["ci95"][1] < 0 for d in per_seed):
            outcome = "worse under every seed"
        elif abs(mean) <= max(sp[other]["sd"], sp[base]["sd"]):
            outcome = "within the training-seed spread"
        else:
            outcome = "not consistent across seeds"
        outcomes[other] = {
            "mean_diff": mean,
            "per_seed": [{"diff": d["diff"], "ci95": d["ci95"]} for d in per_seed],
            "outcome": outcome,
        }
        shown = ", ".join(f"{d:+.4f}" for d in diffs)
        lines.append(
            f"{other} vs {base} on {primary} over {len(pairs)} seeds: mean {mean:+.4f} "
            f"(per seed {shown}; seed s.d. {sp[other]['sd']:.4f} and {sp[base]['sd']:.4f}): "
            f"{outcome}"
        )
    return {
        "primary": primary,
        "baseline": base,
        "rule": SEED_RULE,
        "outcomes": outcomes,
        "text": "; ".join(lines) if lines else "one model group, no comparison",
    }
