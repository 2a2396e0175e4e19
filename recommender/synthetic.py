"""Synthetic worlds whose structure is known: the demo data of `make run` and the tests.

Two worlds, chosen with ``make_world(..., feature_signal=...)``:

``"weak"`` (the default): features as weakly informative as real ones.
    Calibrated so that the measurements made on MovieLens 100K (issue 15; docs/WORLD.md) come out in
    the same order on it: for warm users ``row_norm="features"`` >= pure collaborative filtering, well
    above ``row_norm="together"``; users known only by their features no better than popularity; new
    items ranked through their features with an AUC around 0.7; popularity a real competitor (about
    half the model's precision for warm users). ``bench/calibrate_world.py`` measures it.

    - **Taste is latent.** Items belong to one of ``n_clusters`` (20) latent clusters; each user has a
      taste vector over the clusters drawn from a Dirichlet (concentration ``concentration`` per
      cluster: most users care for a few clusters) and a small continuous taste for item-level latent
      factors. Nothing of either is published.
    - **Choices.** A user picks ``n`` distinct items with probability proportional to
      ``popularity(item) * exp(taste * log theta_u[cluster] + item_taste * w_u . v_i)`` (Gumbel top-n,
      no replacement): a strong Zipf-like popularity whose log is shifted a little by the item's
      decade and cluster (so item features predict popularity somewhat, as genres and decades do).
    - **Activity.** ``n`` per user is ``min_interactions`` (20; half the mean when that is smaller)
      plus a log-normal extra (a long tail of very active users), at most half the catalogue; the mean
      defaults to MovieLens 100K's density (6.3% of the catalogue, at least 25).
      Interactions are in random order in time (each user starts within half a year and acts every
      few minutes to a day), and the log is sorted by timestamp.
    - **Ratings.** The weight is a 1-5 rating that rises with the user's affinity for the item
      (standardised among the user's own choices) plus noise; mean about 3.55 (MovieLens: 3.53).
    - **Item features** (3 per item): one ``genre:<g>`` (8 genres; each cluster has a home genre, 2 or
      3 clusters share one; the item carries its cluster's with probability ``genre_alignment``, else
      a random one), ``tag:<genre>-<k>`` (k in 0..2: the cluster's tag within that genre with
      probability ``tag_alignment``, else random) and ``decade:<d>`` (the cluster's decade with
      probability ``decade_alignment``, else random). Genres and tags are partly aligned with the
      latent clusters: somewhat informative.
    - **User features** (about 3.4 per user): ``age:<band>``, ``gender:<F|M>`` and
      ``occupation:<x>``, each shifting the Dirichlet's means by a random ``demographic``-scaled
      amount per cluster (barely predictive), and for ``interest_share`` of the users one stated
      ``interest:<genre>``: their true favourite genre with probability ``interest_accuracy``, else a
      random one.
    - ``user_interests`` (ground truth, never a feature) are each user's one or two favourite genres:
      those holding the most of the user's expected choices (a second one when it holds at least 60%
      of the first's share). ``item_genre`` is the item's one genre (its ``genre:`` feature).

    Consequences: a user's stated ``interest:horror`` shifts its feature-only answer toward horror
    only a little, and the model cannot tell much about a user from age band and occupation alone;
    that is what real data is like (docs/WORLD.md).

``"strong"``: the original demo world, kept for tests that check that the model learns what features say.
    Users have an age band and one or two interests (genres); items have one genre and a few tags
    correlated with it. A user picks items with probability proportional to item popularity (Zipf)
    times a strong affinity (``affinity``, 12x) when the item's genre is one of the user's interests (and
    a mild one for the genre their age band leans to). Same seed, same data as before this option existed.

In both, some users and items are held back as "new" (``new_user_frac``, ``new_item_frac``, 5% each):
their features are published, their interactions are not (they are returned separately as ground truth
for cold-start evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
GENDERS = ("F", "M")
OCCUPATIONS = ("administrator", "artist", "educator", "engineer", "executive", "healthcare", "other",
               "programmer", "retired", "student", "technician", "writer")
DECADES = ("1960s", "1970s", "1980s", "1990s", "2000s", "2010s", "2020s")
FEATURE_SIGNALS = ("weak", "strong")
MOVIELENS_DENSITY = 0.063  # MovieLens 100K: 100,000 ratings / (943 users x 1682 items)


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
    truth: "Truth | None" = None  # the weak world's choice model (None in the strong world)


@dataclass(frozen=True)
class Truth:
    """The weak world's ground truth: the log-odds with which a user chooses an item.

    A user's interactions are drawn, without replacement, with probability proportional to
    ``exp(logits)`` (Plackett-Luce via Gumbel keys), where ``logits[u, i] = log_pop[i] +
    taste * log(theta[u, cluster[i]] + 0.001) + item_taste * user_factors[u] @ item_factors[i]``.
    Simulations (bench/sim_online.py) use it as the users' true taste.
    """

    user_ids: list[str]  # row order (u1..uN)
    item_ids: list[str]  # column order (i1..iM)
    log_pop: np.ndarray  # (n_items,)
    theta: np.ndarray  # (n_users, n_clusters) taste per cluster, rows sum to 1
    cluster: np.ndarray  # (n_items,) int
    user_factors: np.ndarray  # (n_users, 8)
    item_factors: np.ndarray  # (n_items, 8)
    taste: float
    item_taste: float
    # what a user's features can say about its taste (None in worlds made before these were kept): the Dirichlet
    # parameters theta was drawn from (from age band, gender, occupation), P(an item's genre | its cluster), and
    # the chance a stated interest:<genre> is the user's favourite genre (else a uniformly random genre)
    taste_prior: np.ndarray | None = None  # (n_users, n_clusters)
    genre_given_cluster: np.ndarray | None = None  # (n_clusters, n_genres), genres in GENRES order
    interest_accuracy: float | None = None

    def logits(self, users: Sequence[str]) -> np.ndarray:
        """(len(users), n_items) float64: the choice log-odds of each user for every item.

        Raises KeyError for a user id that is not in the world.
        """
        row = {u: k for k, u in enumerate(self.user_ids)}
        rows = np.asarray([row[u] for u in users], dtype=np.int64)
        return (self.log_pop + self.taste * np.log(self.theta[rows][:, self.cluster] + 1e-3)
                + self.item_taste * (self.user_factors[rows] @ self.item_factors.T))


@dataclass(frozen=True)
class WeakWorld:
    """The knobs of the weak world, at their calibrated values (see the module docstring and docs/WORLD.md)."""

    n_clusters: int = 20  # latent item clusters
    concentration: float = 0.3  # Dirichlet parameter per cluster of the users' taste (small: a few clusters)
    taste: float = 1.2  # weight of log(taste for the item's cluster) in a choice's log-odds
    item_taste: float = 0.5  # weight of the item-level latent factors (8 dimensions)
    zipf: float = 0.9  # popularity ~ 1 / rank ** zipf (before the shifts below)
    popularity_by_decade: float = 0.5  # std of the log-popularity shift per decade
    popularity_by_cluster: float = 0.3  # std of the log-popularity shift per cluster
    demographic: float = 0.1  # std of the shift of the taste's log-means per age band, gender, occupation
    interest_share: float = 0.4  # share of users with a stated interest:<genre> feature
    interest_accuracy: float = 0.5  # chance a stated interest is the user's favourite genre (else random)
    genre_alignment: float = 0.7  # chance an item's genre is its cluster's home genre
    tag_alignment: float = 0.6  # chance an item's tag is its cluster's tag within the genre
    decade_alignment: float = 0.3  # chance an item's decade is its cluster's decade
    min_interactions: int = 20  # fewest interactions per user (MovieLens 100K: 20)
    activity_sigma: float = 1.0  # log-normal sigma of the interactions above the minimum
    rating_slope: float = 0.9  # rating = round(3.6 + slope * standardised affinity + N(0, rating_noise))
    rating_noise: float = 0.9


def make_world(n_users: int = 2000, n_items: int = 1500, *, new_user_frac: float = 0.05,
               new_item_frac: float = 0.05, mean_interactions: float | None = None, affinity: float = 12.0,
               zipf: float | None = None, seed: int = 42, start_ts: int = 1_700_000_000,
               feature_signal: str = "weak", weak: WeakWorld | None = None) -> World:
    """Generate a deterministic world (same arguments, same data). Ids are u1..uN and i1..iM.

    ``feature_signal="weak"`` (default) is the world calibrated against MovieLens 100K, whose features
    barely predict taste; ``"strong"`` is the original world whose features predict taste well (for
    tests that check the model learns them). ``mean_interactions`` per user defaults to 25 in the
    strong world and to MovieLens 100K's density (6.3% of ``n_items``, at least 25) in the weak one;
    ``zipf`` (popularity ~ 1 / rank ** zipf) defaults to 0.9 in both (in the weak one: ``weak.zipf``,
    which a given ``zipf`` replaces). ``affinity`` is the strong world's multiplier for items of a
    user's interests; ``weak`` replaces the weak world's knobs (:class:`WeakWorld`, calibrated defaults).

    Raises
    ------
    ValueError
        An unknown ``feature_signal``, or fewer than one user or two items.
    """
    if feature_signal not in FEATURE_SIGNALS:
        raise ValueError(f"feature_signal must be one of {FEATURE_SIGNALS}, got {feature_signal!r}")
    if n_users < 1 or n_items < 2:
        raise ValueError(f"a world needs at least 1 user and 2 items, got {n_users} x {n_items}")
    if feature_signal == "strong":
        return _strong_world(n_users, n_items, new_user_frac=new_user_frac, new_item_frac=new_item_frac,
                             mean_interactions=25.0 if mean_interactions is None else mean_interactions,
                             affinity=affinity, zipf=0.9 if zipf is None else zipf, seed=seed, start_ts=start_ts)
    knobs = weak or WeakWorld()
    if zipf is not None:
        knobs = replace(knobs, zipf=zipf)
    if mean_interactions is None:
        mean_interactions = max(knobs.min_interactions + 5.0, MOVIELENS_DENSITY * n_items)
    return _weak_world(n_users, n_items, knobs, new_user_frac=new_user_frac, new_item_frac=new_item_frac,
                       mean_interactions=float(mean_interactions), seed=seed, start_ts=start_ts)


def _weak_world(n_users: int, n_items: int, w: WeakWorld, *, new_user_frac: float, new_item_frac: float,
                mean_interactions: float, seed: int, start_ts: int) -> World:
    """The weak world (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_clusters, n_genres, n_dims = w.n_clusters, len(GENRES), 8
    users = np.asarray([f"u{k}" for k in range(1, n_users + 1)], dtype=object)
    items = np.asarray([f"i{k}" for k in range(1, n_items + 1)], dtype=object)

    # clusters: a home genre each (2-3 clusters per genre), a tag index within the genre, a decade
    home_genre = rng.permutation(np.arange(n_clusters) % n_genres)
    home_tag = np.zeros(n_clusters, dtype=np.int64)
    for g in range(n_genres):
        members = np.flatnonzero(home_genre == g)
        home_tag[members] = np.arange(len(members)) % 3
    home_decade = rng.integers(0, len(DECADES), n_clusters)

    # items
    cluster = rng.integers(0, n_clusters, n_items)
    genre = np.where(rng.random(n_items) < w.genre_alignment, home_genre[cluster], rng.integers(0, n_genres, n_items))
    tag = np.where(rng.random(n_items) < w.tag_alignment, home_tag[cluster], rng.integers(0, 3, n_items))
    decade = np.where(rng.random(n_items) < w.decade_alignment, home_decade[cluster],
                      rng.integers(0, len(DECADES), n_items))
    rank = rng.permutation(n_items) + 1
    log_pop = (-w.zipf * np.log(rank) + w.popularity_by_decade * rng.normal(size=len(DECADES))[decade]
               + w.popularity_by_cluster * rng.normal(size=n_clusters)[cluster])
    item_factors = rng.normal(size=(n_items, n_dims))

    # users: demographics tilt the Dirichlet's means a little; taste itself is latent
    age = rng.integers(0, len(AGE_BANDS), n_users)
    gender = rng.integers(0, len(GENDERS), n_users)
    occupation = rng.integers(0, len(OCCUPATIONS), n_users)
    tilt = w.demographic * (rng.normal(size=(len(AGE_BANDS), n_clusters))[age]
                            + rng.normal(size=(len(GENDERS), n_clusters))[gender]
                            + rng.normal(size=(len(OCCUPATIONS), n_clusters))[occupation])
    means = np.exp(tilt)
    means /= means.sum(axis=1, keepdims=True)
    theta = rng.gamma(w.concentration * n_clusters * means)  # one Dirichlet draw per row
    theta /= theta.sum(axis=1, keepdims=True)
    user_factors = rng.normal(size=(n_users, n_dims)) / np.sqrt(n_dims)

    # activity: a floor plus a log-normal long tail, capped at half the catalogue
    floor = max(1, min(w.min_interactions, int(mean_interactions // 2), n_items // 4))
    extra = max(mean_interactions - floor, 1.0)
    mu = np.log(extra) - w.activity_sigma ** 2 / 2
    count = floor + np.round(np.exp(rng.normal(mu, w.activity_sigma, n_users))).astype(np.int64)
    count = np.clip(count, floor, max(floor, n_items // 2))

    new_users = set(rng.choice(n_users, size=int(n_users * new_user_frac), replace=False).tolist())
    new_items = set(rng.choice(n_items, size=int(n_items * new_item_frac), replace=False).tolist())

    starts = start_ts + rng.integers(0, 180 * 86_400, n_users)
    u_col, i_col, r_col, t_col = [], [], [], []
    for lo in range(0, n_users, 256):
        hi = min(n_users, lo + 256)
        affinity = (w.taste * np.log(theta[lo:hi][:, cluster] + 1e-3)
                    + w.item_taste * (user_factors[lo:hi] @ item_factors.T))
        keys = log_pop + affinity + rng.gumbel(size=affinity.shape)
        for j, u in enumerate(range(lo, hi)):
            n = int(count[u])
            chosen = rng.permutation(np.argpartition(-keys[j], n - 1)[:n])  # the top n keys, in random order
            a = affinity[j, chosen]
            z = (a - a.mean()) / (a.std() + 1e-9)
            rating = np.clip(np.round(3.6 + w.rating_slope * z + rng.normal(0.0, w.rating_noise, n)), 1, 5)
            u_col.append(np.full(n, u))
            i_col.append(chosen)
            r_col.append(rating)
            t_col.append(starts[u] + np.cumsum(rng.integers(60, 86_400, n)))
    u_idx, i_idx = np.concatenate(u_col), np.concatenate(i_col)
    frame = pd.DataFrame({"user_id": users[u_idx], "item_id": items[i_idx], "weight": np.concatenate(r_col),
                          "timestamp": np.concatenate(t_col).astype(np.int64)})
    held = np.isin(u_idx, list(new_users)) | np.isin(i_idx, list(new_items))
    order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
    frame, held = frame.iloc[order], held[order]
    published = frame[~held].reset_index(drop=True)
    holdout = frame[held].reset_index(drop=True)

    # ground truth: the genres holding most of each user's expected choices
    genre_given_cluster = np.full((n_clusters, n_genres), (1 - w.genre_alignment) / n_genres)
    genre_given_cluster[np.arange(n_clusters), home_genre] += w.genre_alignment
    share = theta @ genre_given_cluster
    top = np.argsort(-share, axis=1, kind="stable")[:, :2]
    best = share[np.arange(n_users), top[:, 0]]
    runner_up = share[np.arange(n_users), top[:, 1]]
    interests = {}
    ufeat = []
    for u in range(n_users):
        liked = [int(top[u, 0])] + ([int(top[u, 1])] if runner_up[u] >= 0.6 * best[u] else [])
        interests[users[u]] = tuple(GENRES[g] for g in sorted(liked))
        ufeat += [(users[u], f"age:{AGE_BANDS[age[u]]}", 1.0), (users[u], f"gender:{GENDERS[gender[u]]}", 1.0),
                  (users[u], f"occupation:{OCCUPATIONS[occupation[u]]}", 1.0)]
        if rng.random() < w.interest_share:
            stated = liked[0] if rng.random() < w.interest_accuracy else int(rng.integers(0, n_genres))
            ufeat.append((users[u], f"interest:{GENRES[stated]}", 1.0))
    ifeat = []
    for i in range(n_items):
        ifeat.append((items[i], f"genre:{GENRES[genre[i]]}", 1.0))
        ifeat.append((items[i], f"tag:{GENRES[genre[i]]}-{tag[i]}", 1.0))
        ifeat.append((items[i], f"decade:{DECADES[decade[i]]}", 1.0))
    return World(
        interactions=published,
        user_features=pd.DataFrame(ufeat, columns=["user_id", "feature", "weight"]),
        item_features=pd.DataFrame(ifeat, columns=["item_id", "feature", "weight"]),
        holdout=holdout,
        new_users=[users[u] for u in sorted(new_users)],
        new_items=[items[i] for i in sorted(new_items)],
        user_interests=interests,
        item_genre={items[i]: GENRES[genre[i]] for i in range(n_items)},
        truth=Truth(list(users), list(items), log_pop, theta, cluster, user_factors, item_factors,
                    w.taste, w.item_taste, taste_prior=w.concentration * n_clusters * means,
                    genre_given_cluster=genre_given_cluster, interest_accuracy=w.interest_accuracy),
    )


def _strong_world(n_users: int, n_items: int, *, new_user_frac: float, new_item_frac: float,
                  mean_interactions: float, affinity: float, zipf: float, seed: int, start_ts: int) -> World:
    """The original demo world: features predict taste well (see the module docstring)."""
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
