"""A synthetic world whose structure is known: tastes follow features, popularity has a long tail.

Users have an age band and one or two interests (genres); items have one genre and a few tags
correlated with it. A user picks items with probability proportional to item popularity (Zipf) times a
strong affinity when the item's genre is one of the user's interests (and a mild one for the genre
their age band leans to). Some users and items are held back as "new": their features are published,
their interactions are not (they are returned separately as ground truth for cold-start evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")


@dataclass
class World:
    """Everything generated: the published data and the ground truth behind it."""

    interactions: pd.DataFrame  # user_id, item_id, weight, timestamp (known users and items only)
    user_features: pd.DataFrame  # user_id, feature, weight (all users, new ones included)
    item_features: pd.DataFrame  # item_id, feature, weight (all items, new ones included)
    holdout: pd.DataFrame  # interactions of new users, and with new items (never published)
    new_users: list[str]
    new_items: list[str]
    user_interests: dict[str, tuple[str, ...]]
    item_genre: dict[str, str]


def make_world(n_users: int = 2000, n_items: int = 1500, *, new_user_frac: float = 0.05,
               new_item_frac: float = 0.05, mean_interactions: float = 25.0, affinity: float = 12.0,
               zipf: float = 0.9, seed: int = 42, start_ts: int = 1_700_000_000) -> World:
    """Generate a deterministic world (same seed, same data). Ids are u1..uN and i1..iM."""
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    users = [f"u{k}" for k in range(1, n_users + 1)]
    items = [f"i{k}" for k in range(1, n_items + 1)]

    genre_of = rng.integers(0, n_genres, n_items)
    rank = rng.permutation(n_items) + 1
    popularity = 1.0 / rank ** zipf
    age_of = rng.integers(0, len(AGE_BANDS), n_users)
    age_lean = {a: a % n_genres for a in range(len(AGE_BANDS))}
    interests = []
    for _ in range(n_users):
        k = 1 if rng.random() < 0.5 else 2
        interests.append(tuple(sorted(rng.choice(n_genres, size=k, replace=False).tolist())))

    new_users = set(rng.choice(n_users, size=int(n_users * new_user_frac), replace=False).tolist())
    new_items = set(rng.choice(n_items, size=int(n_items * new_item_frac), replace=False).tolist())

    rows = []
    ts = start_ts
    for u in range(n_users):
        taste = np.ones(n_genres)
        taste[list(interests[u])] = affinity
        taste[age_lean[age_of[u]]] *= 1.5
        p = popularity * taste[genre_of]
        p /= p.sum()
        count = int(np.clip(rng.poisson(mean_interactions), 3, n_items // 2))
        chosen = rng.choice(n_items, size=count, replace=False, p=p)
        for i in chosen:
            liked = genre_of[i] in interests[u]
            weight = float(rng.integers(3, 6) if liked else rng.integers(1, 4))
            ts += int(rng.integers(1, 120))
            rows.append((users[u], items[i], weight, ts, u in new_users or i in new_items))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "weight", "timestamp", "held"])
    published = frame[~frame["held"]].drop(columns="held").reset_index(drop=True)
    holdout = frame[frame["held"]].drop(columns="held").reset_index(drop=True)

    ufeat = []
    for u in range(n_users):
        ufeat.append((users[u], f"age:{AGE_BANDS[age_of[u]]}", 1.0))
        for g in interests[u]:
            ufeat.append((users[u], f"interest:{GENRES[g]}", 1.0))
    ifeat = []
    for i in range(n_items):
        g = genre_of[i]
        ifeat.append((items[i], f"genre:{GENRES[g]}", 1.0))
        # two tags from the genre's own pool of three and, sometimes, a random one (noise)
        for t in rng.choice(3, size=2, replace=False):
            ifeat.append((items[i], f"tag:{GENRES[g]}-{t}", 1.0))
        if rng.random() < 0.3:
            ifeat.append((items[i], f"tag:misc-{int(rng.integers(0, 10))}", 1.0))
    return World(
        interactions=published,
        user_features=pd.DataFrame(ufeat, columns=["user_id", "feature", "weight"]),
        item_features=pd.DataFrame(ifeat, columns=["item_id", "feature", "weight"]),
        holdout=holdout,
        new_users=[users[u] for u in sorted(new_users)],
        new_items=[items[i] for i in sorted(new_items)],
        user_interests={users[u]: tuple(GENRES[g] for g in interests[u]) for u in range(n_users)},
        item_genre={items[i]: GENRES[genre_of[i]] for i in range(n_items)},
    )
