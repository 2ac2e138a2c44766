"""Merchants (items) and users of the simulated city, with their hidden traits.

Public attributes (what a real catalogue holds: category, price, rating, reviews, location,
opening hours, title) go to ``logs/items.parquet``; latent traits (true quality, tastes,
budgets, sensitivities) stay in ``world/`` so that models never see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.world.config import CATEGORIES, DISTRICTS, WorldConfig

_PREFIXES = (
    "Golden",
    "Lucky",
    "Old",
    "Happy",
    "Jade",
    "Red",
    "Little",
    "Grand",
    "Sunny",
    "Blue",
    "Silver",
    "Panda",
    "Lotus",
    "Bamboo",
    "Harbor",
    "Maple",
    "Cloud",
    "River",
    "Lantern",
    "Peach",
)
_NOUNS = (
    "Dragon",
    "House",
    "Garden",
    "Kitchen",
    "Corner",
    "Story",
    "Lane",
    "Bowl",
    "Table",
    "Spoon",
    "Pavilion",
    "Court",
    "Room",
    "Tree",
    "Bridge",
    "Moon",
    "Well",
    "Gate",
    "Tower",
    "Yard",
)
PRICE_PER_LEVEL = (0.0, 35.0, 80.0, 160.0, 320.0)  # CNY per person at levels 1..4
N_CHAINS_PER_CATEGORY = 3
N_STYLE = 4  # latent style dimensions shared by merchants and users


@dataclass
class Items:
    """Merchant arrays, all of length n_items and indexed by item index."""

    item_id: np.ndarray  # str
    category: np.ndarray  # int, index into CATEGORIES
    brand: np.ndarray  # int, index into brand_names, -1 for an independent merchant
    district: np.ndarray  # int, index into DISTRICTS
    x: np.ndarray  # km east of the centre
    y: np.ndarray  # km north of the centre
    price_level: np.ndarray  # int 1..4
    avg_price: np.ndarray  # CNY per person
    rating: np.ndarray  # 1.0..5.0, one decimal: a noisy view of quality
    review_count: np.ndarray  # int: a noisy view of popularity and quality
    open_hour: np.ndarray  # int
    close_hour: np.ndarray  # int, may exceed 24
    title: np.ndarray  # str
    quality: np.ndarray  # latent, standard normal-ish; models never see it
    style: np.ndarray  # (n_items, N_STYLE) latent style (ambience, crowd, ...); models never see it
    brand_names: list[str]
    brand_category: np.ndarray  # int per brand

    def __len__(self) -> int:
        return len(self.item_id)


@dataclass
class Users:
    """User arrays, all of length n_users and indexed by user index."""

    user_id: np.ndarray  # str
    home_district: np.ndarray  # int
    home_x: np.ndarray
    home_y: np.ndarray
    taste: np.ndarray  # (n_users, n_categories) centred log-affinity; latent
    style: np.ndarray  # (n_users, N_STYLE) latent liking of merchant styles
    budget: np.ndarray  # preferred price level, 1..4; latent
    price_sensitivity: np.ndarray  # latent
    distance_sensitivity: np.ndarray  # latent
    activity: np.ndarray  # relative search frequency; latent
    device: np.ndarray  # str, "ios" or "android"
    member: np.ndarray  # bool, a public attribute

    def __len__(self) -> int:
        return len(self.user_id)


def make_items(cfg: WorldConfig, rng: np.random.Generator) -> Items:
    """Draw the city's merchants: chains (near-duplicate branches) and independents."""
    n = cfg.n_items
    n_cat = len(CATEGORIES)
    shares = np.array([c.share for c in CATEGORIES])
    category = rng.choice(n_cat, size=n, p=shares / shares.sum())

    # Chains: a few brands per category whose branches share a name, a quality and a price.
    brand_names: list[str] = []
    brand_category: list[int] = []
    used: set[str] = set()
    for c in range(n_cat):
        for _ in range(N_CHAINS_PER_CATEGORY):
            while True:
                name = f"{rng.choice(_PREFIXES)} {rng.choice(_NOUNS)}"
                if name not in used:
                    break
            used.add(name)
            brand_names.append(name)
            brand_category.append(c)
    brand_cat = np.array(brand_category)
    brand_quality = rng.normal(0.0, 0.8, size=len(brand_names))
    brand_price_shift = rng.normal(0.0, 0.4, size=len(brand_names))
    brand_style = rng.normal(0.0, 1.0, (len(brand_names), N_STYLE))

    brand = np.full(n, -1, dtype=np.int64)
    is_branch = rng.random(n) < 0.3
    for b in np.flatnonzero(is_branch):
        brand[b] = int(rng.choice(np.flatnonzero(brand_cat == category[b])))

    n_d = len(DISTRICTS)
    district = rng.choice(n_d, size=n, p=_district_weights())
    cx = np.array([d[1] for d in DISTRICTS])[district]
    cy = np.array([d[2] for d in DISTRICTS])[district]
    x = cx + rng.normal(0.0, 1.3, size=n)
    y = cy + rng.normal(0.0, 1.3, size=n)

    quality = rng.normal(0.0, 1.0, size=n)
    has_brand = brand >= 0
    quality[has_brand] = brand_quality[brand[has_brand]] + rng.normal(0.0, 0.3, has_brand.sum())

    typical = np.array([c.price_level for c in CATEGORIES])[category]
    shift = rng.normal(0.0, 0.6, size=n) + 0.25 * quality
    shift[has_brand] = brand_price_shift[brand[has_brand]] + rng.normal(0.0, 0.15, has_brand.sum())
    price_level = np.clip(np.rint(typical + shift), 1, 4).astype(np.int64)
    avg_price = np.round(np.array(PRICE_PER_LEVEL)[price_level] * rng.lognormal(0.0, 0.25, n), 0)

    style = rng.normal(0.0, 1.0, (n, N_STYLE))
    style[has_brand] = brand_style[brand[has_brand]] + rng.normal(
        0.0, 0.3, (has_brand.sum(), N_STYLE)
    )
    rating = np.clip(np.round(4.0 + 0.35 * quality + rng.normal(0.0, 0.3, n), 1), 1.0, 5.0)
    popularity = rng.normal(0.0, 1.0, n)
    review_count = np.floor(rng.lognormal(4.0 + 0.45 * quality + 0.8 * popularity, 0.6)).astype(
        np.int64
    )

    open_base = np.array([c.open_hour for c in CATEGORIES])[category]
    close_base = np.array([c.close_hour for c in CATEGORIES])[category]
    always = (open_base == 0) & (close_base == 24)
    jitter = rng.integers(-1, 2, size=n)
    open_hour = np.where(always, 0, np.clip(open_base + jitter, 0, 23))
    close_hour = np.where(always, 24, close_base + rng.integers(-1, 2, size=n))

    titles = []
    for i in range(n):
        word = CATEGORIES[category[i]].synonyms[0].title()
        dname = DISTRICTS[district[i]][0]
        if brand[i] >= 0:
            titles.append(f"{brand_names[brand[i]]} {word} ({dname})")
        else:
            titles.append(f"{rng.choice(_PREFIXES)} {rng.choice(_NOUNS)} {word} ({dname})")

    width = len(str(n))
    return Items(
        item_id=np.array([f"i{i:0{width}d}" for i in range(n)], dtype=object),
        category=category,
        brand=brand,
        district=district,
        x=x,
        y=y,
        price_level=price_level,
        avg_price=avg_price,
        rating=rating,
        review_count=review_count,
        open_hour=open_hour.astype(np.int64),
        close_hour=close_hour.astype(np.int64),
        title=np.array(titles, dtype=object),
        quality=quality,
        style=style,
        brand_names=brand_names,
        brand_category=brand_cat,
    )


def make_users(cfg: WorldConfig, rng: np.random.Generator) -> Users:
    """Draw users: a home, concentrated category tastes, a budget and sensitivities."""
    n = cfg.n_users
    n_cat = len(CATEGORIES)
    home_district = rng.choice(len(DISTRICTS), size=n, p=_district_weights())
    home_x = np.array([d[1] for d in DISTRICTS])[home_district] + rng.normal(0.0, 1.5, n)
    home_y = np.array([d[2] for d in DISTRICTS])[home_district] + rng.normal(0.0, 1.5, n)
    shares = rng.dirichlet(np.full(n_cat, 0.3), size=n)  # (n_users, C)
    taste = np.log(shares * n_cat + 0.05)
    taste -= taste.mean(axis=1, keepdims=True)
    taste = np.clip(taste, -2.5, 2.5)
    width = len(str(n))
    return Users(
        user_id=np.array([f"u{i:0{width}d}" for i in range(n)], dtype=object),
        home_district=home_district,
        home_x=home_x,
        home_y=home_y,
        taste=taste,
        style=rng.normal(0.0, 1.0, (n, N_STYLE)),
        budget=np.clip(rng.normal(2.2, 0.9, n), 1.0, 4.0),
        price_sensitivity=rng.lognormal(0.0, 0.45, n),
        distance_sensitivity=rng.lognormal(0.0, 0.45, n),
        activity=rng.lognormal(0.0, 0.9, n),
        device=np.where(rng.random(n) < 0.45, "ios", "android").astype(object),
        member=rng.random(n) < 0.3,
    )


def _district_weights() -> np.ndarray:
    # Central districts are denser.
    w = np.array([1.6, 1.2, 1.4, 1.3, 0.9, 0.8, 0.9, 0.7])
    return w / w.sum()
