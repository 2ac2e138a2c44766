"""Feature configuration: which columns become which features.

A TOML file (``--config FILE``) or a built-in name: ``sim`` (the simulated world; this
package's ``sim.toml``) or ``generic`` (the default without a config: counters, list
features, the item id, the behaviour sequence, and every numeric item column).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

_HERE = Path(__file__).parent
BUILTIN = {"sim": _HERE / "sim.toml"}


@dataclass
class SplitConfig:
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    valid_start: str | None = None  # ISO-8601; dates override fractions when both are given
    test_start: str | None = None


@dataclass
class ItemConfig:
    numeric: list[str] = field(default_factory=list)
    log1p: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    location: list[str] = field(default_factory=list)  # [lat, lon]
    hours: list[str] = field(default_factory=list)  # [open_hour, close_hour]
    id_embedding: bool = True
    max_vocab: int = 200_000  # larger vocabularies are hashed into this many buckets
    auto_numeric: bool = False  # use every numeric column of the items table


@dataclass
class RequestConfig:
    location: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)


@dataclass
class UserConfig:
    categorical: list[str] = field(default_factory=list)


@dataclass
class CounterConfig:
    delay_s: int = 3600
    bucket_s: int = 600
    windows: list[str] = field(default_factory=lambda: ["7d", "all"])
    prior_strength: float = 20.0
    group_column: str | None = None

    def window_buckets(self) -> list[tuple[str, int | None]]:
        """(name, length in buckets, None for all time) for each window."""
        out: list[tuple[str, int | None]] = []
        for w in self.windows:
            if w == "all":
                out.append((w, None))
                continue
            seconds = parse_duration(w)
            if seconds % self.bucket_s:
                raise ValueError(f"window {w} is not a multiple of bucket_s={self.bucket_s}")
            out.append((w, seconds // self.bucket_s))
        return out


@dataclass
class HistoryConfig:
    max_len: int = 50
    category_column: str | None = None
    # Numeric item attributes carried by each history event (e.g. the price the user paid
    # attention to); each also gives candidate features hist_mean_<c> and <c>_minus_hist.
    item_numeric: list[str] = field(default_factory=list)


@dataclass
class ListConfig:
    compare: list[str] = field(default_factory=list)  # features ranked and z-scored in the list
    group_column: str | None = None  # "similar" candidates share this item column
    similarity_text: str | None = None  # text column compared with the best-rated similar one
    # Categorical item columns whose shared values pair two candidates for the Transformer's
    # list attention (e.g. branches of one brand); the features pipeline does not use them.
    pair_columns: list[str] = field(default_factory=list)


@dataclass
class FeatureConfig:
    labels: dict[str, int] = field(default_factory=lambda: {"click": 1, "order": 2})
    split: SplitConfig = field(default_factory=SplitConfig)
    items: ItemConfig = field(default_factory=ItemConfig)
    requests: RequestConfig = field(default_factory=RequestConfig)
    users: UserConfig = field(default_factory=UserConfig)
    counters: CounterConfig = field(default_factory=CounterConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    list: ListConfig = field(default_factory=ListConfig)
    name: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "custom") -> FeatureConfig:
        sections = {
            "split": SplitConfig,
            "items": ItemConfig,
            "requests": RequestConfig,
            "users": UserConfig,
            "counters": CounterConfig,
            "history": HistoryConfig,
            "list": ListConfig,
        }
        kwargs: dict[str, Any] = {"name": d.get("name", name)}
        unknown = set(d) - set(sections) - {"labels", "name"}
        if unknown:
            raise ValueError(f"unknown section(s) in feature config: {sorted(unknown)}")
        for key, kind in sections.items():
            try:
                kwargs[key] = kind(**d.get(key, {}))
            except TypeError as e:
                raise ValueError(f"feature config [{key}]: {e}") from e
        if "labels" in d:
            kwargs["labels"] = {str(k): int(v) for k, v in d["labels"].items()}
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if set(self.labels) - {"click", "order"}:
            raise ValueError("labels may map only 'click' and 'order'")
        if any(v < 0 for v in self.labels.values()):
            raise ValueError("labels must be >= 0")
        s = self.split
        if not (0 <= s.valid_fraction < 1 and 0 <= s.test_fraction < 1):
            raise ValueError("split fractions must lie in [0, 1)")
        if s.valid_fraction + s.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be < 1")
        for name, cols in (
            ("items.location", self.items.location),
            ("requests.location", self.requests.location),
        ):
            if cols and len(cols) != 2:
                raise ValueError(f"{name} needs two columns [lat, lon]")
        if self.items.hours and len(self.items.hours) != 2:
            raise ValueError("items.hours needs two columns [open_hour, close_hour]")
        if self.counters.bucket_s <= 0 or self.counters.delay_s < 0:
            raise ValueError("counters need bucket_s > 0 and delay_s >= 0")
        self.counters.window_buckets()
        if self.history.max_len < 0:
            raise ValueError("history.max_len must be >= 0")


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m', '45s' -> seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in units or not t[:-1].isdigit() or int(t[:-1]) <= 0:
        raise ValueError(f"bad duration {text!r}: use e.g. 7d, 12h, 30m")
    return int(t[:-1]) * units[t[-1]]


def generic_config() -> FeatureConfig:
    """Without a config: counters, list features, item id, history, numeric item columns."""
    cfg = FeatureConfig(name="generic")
    cfg.items.auto_numeric = True
    cfg.list.compare = ["item_ctr_7d", "item_cvr_all", "qi_ctr_all"]
    return cfg


def load_config(spec: str | Path | None) -> FeatureConfig:
    """A config from a TOML path, a built-in name ('sim', 'generic'), or None (generic)."""
    if spec is None or str(spec) == "generic":
        return generic_config()
    path = BUILTIN.get(str(spec), Path(spec))
    if not path.exists():
        raise FileNotFoundError(
            f"feature config {spec!r}: no such file or built-in ({', '.join(BUILTIN)})"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    return FeatureConfig.from_dict(data, name=str(spec) if str(spec) in BUILTIN else path.stem)


# ---- how `ranker features` runs (pipelines.features.engine) ----------------------------------
def _setting(default: object, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class EngineConfig:
    """How ``ranker features`` runs (the CLI's flags are these fields)."""

    engine: Literal["local", "ray"] = _setting("local", "local: this process; ray: Ray actors")
    shards: int = _setting(0, "key shards of the replay (0: none locally, one per worker on Ray)")
    workers: int = _setting(2, "Ray actors (each holds shards and featurises parts)")
    address: str | None = _setting(None, "an existing Ray cluster (default: start a local one)")

    def __post_init__(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.shards < 0 or self.workers < 1:
            raise ValueError("shards must be >= 0 and workers >= 1")
        if self.engine == "local" and self.address is not None:
            raise ValueError("--address names a Ray cluster: use it with --engine ray")

    @property
    def shard_count(self) -> int:
        """Key shards (0 locally: no sharding, one state)."""
        return self.shards or (self.workers if self.engine == "ray" else 0)


LOCAL = EngineConfig()


def engine_flags() -> list[tuple[str, dict[str, object]]]:
    """argparse ``(flag, options)`` for every ``EngineConfig`` field."""
    out = []
    for f in dataclasses.fields(EngineConfig):
        opts: dict[str, object] = {"default": f.default, "help": f.metadata.get("help", "")}
        if f.name == "engine":
            opts["choices"] = ["local", "ray"]
        elif f.type in ("int", int):
            opts["type"] = int
        out.append((f"--{f.name.replace('_', '-')}", opts))
    return out


def engine_from_args(args: object) -> EngineConfig:
    return EngineConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)})
