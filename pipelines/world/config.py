"""Parameters of the simulated local-services world.

Everything that shapes the world lives here, in one place, so that ``world.json`` can record
all of it and so that a reader can see the size of every effect. The values were fixed before
any model was trained on the world (issue "Foundation"); change them only for realism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Category:
    """A merchant category and how people use it."""

    name: str
    share: float  # share of merchants in the city
    price_level: float  # typical price level, 1 (cheap) .. 4 (expensive)
    peaks: tuple[float, ...]  # hours of the day when it is most wanted
    distance_tolerance: float  # multiplies the user's distance sensitivity (hotels < 1)
    food: bool  # answers generic food queries such as "dinner"
    open_hour: int
    close_hour: int  # may exceed 24: open past midnight
    synonyms: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category(
        "hotpot",
        0.12,
        2.7,
        (12.0, 19.0),
        1.0,
        True,
        10,
        26,
        ("hotpot", "hot pot", "sichuan hotpot"),
    ),
    Category(
        "noodles", 0.11, 1.4, (12.0, 18.5), 1.2, True, 7, 22, ("noodles", "ramen", "beef noodles")
    ),
    Category("coffee", 0.10, 1.6, (8.5, 15.0), 1.4, False, 7, 21, ("coffee", "cafe", "latte")),
    Category("bbq", 0.08, 2.3, (20.0, 23.0), 1.0, True, 16, 28, ("bbq", "barbecue", "skewers")),
    Category("sushi", 0.07, 3.2, (12.5, 19.5), 0.9, True, 11, 22, ("sushi", "japanese food")),
    Category(
        "fast_food",
        0.10,
        1.0,
        (12.0, 18.0, 22.0),
        1.5,
        True,
        0,
        24,
        ("fast food", "burger", "fried chicken"),
    ),
    Category("bakery", 0.07, 1.5, (8.0, 16.0), 1.3, False, 7, 20, ("bakery", "bread", "cake")),
    Category(
        "dessert", 0.07, 1.6, (15.0, 21.0), 1.2, False, 11, 23, ("dessert", "ice cream", "milk tea")
    ),
    Category(
        "hotel",
        0.09,
        3.0,
        (21.0,),
        0.35,
        False,
        0,
        24,
        ("hotel", "hotels near me", "boutique hotel"),
    ),
    Category("spa", 0.06, 3.3, (15.0, 20.0), 0.8, False, 10, 23, ("spa", "massage")),
    Category("cinema", 0.06, 2.0, (19.5,), 0.8, False, 10, 25, ("cinema", "movies")),
    Category("karaoke", 0.07, 2.4, (21.5,), 0.9, False, 14, 29, ("karaoke", "ktv")),
)

# Generic queries: text -> (modifier). They retrieve food merchants; what they mean to a user
# depends on that user's tastes, which is where personalisation pays.
GENERIC_QUERIES: tuple[tuple[str, str], ...] = (
    ("food", "none"),
    ("restaurants near me", "none"),
    ("dinner", "none"),
    ("lunch", "none"),
    ("something to eat", "none"),
    ("cheap eats", "cheap"),
    ("date night", "date"),
)

DISTRICTS: tuple[tuple[str, float, float], ...] = (
    # name, x km, y km (city centre at 0, 0)
    ("Jingan", 0.0, 0.0),
    ("Xuhui", -2.5, -4.0),
    ("Huangpu", 3.0, -0.5),
    ("Pudong", 8.0, 0.5),
    ("Changning", -6.0, -0.5),
    ("Putuo", -4.5, 4.0),
    ("Hongkou", 2.5, 4.5),
    ("Yangpu", 6.5, 6.0),
)
# The city's position on the map, so logs carry plausible lat/lon.
ORIGIN_LAT, ORIGIN_LON = 31.2304, 121.4737


@dataclass(frozen=True)
class RelevanceParams:
    """Weights of the true-relevance model (see ``relevance.py`` for each term)."""

    quality: float = 0.9  # latent merchant quality, seen only noisily through rating/reviews
    off_intent: float = 3.0  # penalty for a merchant of another category than the query asks
    brand_match: float = 1.2  # a brand query finds that brand
    taste: float = 1.2  # user's category affinity (log-odds scale)
    style: float = 0.7  # match of the user's latent style with the merchant's (beyond category)
    generic_taste: float = 2.6  # extra weight of taste when the query does not name a category
    price_over: float = 0.9  # per price level above the user's budget, times price sensitivity
    price_under: float = 0.25  # per level below budget minus one (too cheap for the occasion)
    distance: float = 0.75  # per log1p(km), times the user's distance sensitivity
    hour: float = 0.8  # fit between the hour of the search and the category's peaks
    closed: float = 2.5  # the merchant is closed at the hour of the search
    cheap_date: float = 0.6  # "cheap eats" / "date night" tilt price and quality
    # List context: part of relevance depends on the other candidates (never on their order).
    duplicate: float = 3.0  # a near-duplicate of a better candidate is worth less
    best_deal: float = 0.9  # the cheapest of similar candidates is worth more
    nearest: float = 0.8  # the nearest of similar candidates is worth more
    # Utility u maps to relevance 4 * sigmoid((u - centre) / scale), a graded scale 0..4.
    centre: float = 0.6
    scale: float = 1.1


@dataclass(frozen=True)
class ClickParams:
    """Click model: examination by position, click by attractiveness, order when satisfied."""

    eta: float = 0.65  # examination probability at position p is p ** -eta
    attract_floor: float = 0.02  # click probability of an examined irrelevant item
    attract_span: float = 0.9  # plus this times (2^rel - 1) / 15
    order_max: float = 0.65  # order probability after a click: order_max * sigmoid(...)
    order_mid: float = 2.6
    order_slope: float = 2.0
    stop_after_click: float = 0.15  # chance the user leaves after a click without ordering


@dataclass(frozen=True)
class PolicyParams:
    """The logging policy: a plausible popularity-and-distance ranker with no personalisation."""

    rating: float = 1.0
    reviews: float = 0.35
    distance: float = 0.9
    text_match: float = 1.8
    open_now: float = 0.6
    noise: float = 0.55


@dataclass(frozen=True)
class WorldConfig:
    """Size and knobs of one simulated world; ``ranker simulate`` options map onto these."""

    seed: int = 0
    n_requests: int = 50_000
    n_users: int = 5_000
    n_items: int = 3_000
    days: int = 21
    start: str = "2026-01-05T00:00:00+00:00"  # a Monday; times are UTC, the city runs on UTC
    min_candidates: int = 10
    max_candidates: int = 100
    median_candidates: int = 32
    random_share: float = 0.05  # share of requests shown with randomised adjacent swaps
    list_effect: float = 1.0  # strength of the list-context effect; 0 makes the control world
    relevance: RelevanceParams = field(default_factory=RelevanceParams)
    clicks: ClickParams = field(default_factory=ClickParams)
    policy: PolicyParams = field(default_factory=PolicyParams)

    def __post_init__(self) -> None:
        problems = []
        if self.n_requests < 0:
            problems.append("requests must be >= 0")
        if self.n_users < 1 or self.n_items < 1:
            problems.append("users and items must be >= 1")
        if self.days < 1:
            problems.append("days must be >= 1")
        if not 1 <= self.min_candidates <= self.max_candidates:
            problems.append("need 1 <= min_candidates <= max_candidates")
        if not 0.0 <= self.random_share <= 1.0:
            problems.append("random_share must lie in [0, 1]")
        if self.list_effect < 0:
            problems.append("list_effect must be >= 0")
        if problems:
            raise ValueError("invalid world config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        d = dict(d)
        rel = RelevanceParams(**d.pop("relevance", {}))
        clk = ClickParams(**d.pop("clicks", {}))
        pol = PolicyParams(**d.pop("policy", {}))
        return cls(relevance=rel, clicks=clk, policy=pol, **d)
