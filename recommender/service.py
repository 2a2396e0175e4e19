"""RecommendationService: the use cases behind the HTTP API, with their rules, and the resources they need.

The app (app/) parses a request, calls one method here and serialises the answer; everything that is
not transport lives here: which user records a request reads and what happens when Redis fails (the
degrade policy), what an absent feature hash means, input limits, which model snapshot answers, jobs.
One service per process, built by :meth:`RecommendationService.start` (the app factory calls it once):
a Redis pool, the request path's guarded and cached user reads, the model holder and its watcher, and,
when configured, the trainer thread.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from .errors import InvalidInputError, NoModelError, NotFoundError, StoreUnavailableError
from .features import check_feature_name, check_id, check_weight
from .model import STRATEGY_INTERACTIONS
from .model.index import Ranking
from .model.artifact_store import artifact_store_from_settings
from .serving import ModelHolder, ModelSnapshot, ModelWatcher
from .settings import Settings
from .store import RedisFeatureStore, UserRecord, WriteResult, jobs
from .store.validation import check_features
from .online import (DEFAULT_VARIANT, ImpressionWriter, Variant, assign_variant, exploration_seed,
                     new_recommendation_id, pointer_of, recommendation_age)
from .store.breaker import CircuitBreaker, GuardedReads
from .store.impressions import Attribution, Impression, ImpressionLog, ctr_table, two_proportion_test
from .store.usercache import UserCache
from .training import Trainer

log = logging.getLogger(__name__)

MAX_FEATURES_PER_ENTITY = 1000
MAX_FILTER_NAMES = 50  # feature names in one request's filters
RECOMMENDATION_ID = re.compile(r"^[0-9a-f]{32}$")
ATTRIBUTION_GRACE = 1.5  # seconds an answer may take to reach Redis (writers flush every 0.5 s; margin)
STRATEGY_SESSION = "session"  # POST /recommend for a user the model does not know: its session folded in
SESSION_USER = "\x00session\x00"  # the id a session without user_id is scored as (no real id can be it)
RESULT_CACHE_KEYS = 4  # rankings (option sets, model snapshots) one user-cache entry keeps at most
DEFAULT_HISTORY_LIMIT = 20  # retrain jobs GET /retrain answers without ?limit=


@dataclass(frozen=True)
class Recommendation:
    """One answer of :meth:`RecommendationService.recommend`.

    ``items`` are (item_id, score) pairs, best first (ties by item id). ``strategy`` names the case that
    served the user (DESIGN.md keeps the list). ``degraded`` is True when Redis could not be read and the
    answer came from the model alone (training-time features, no seen-item exclusion).
    """

    user_id: str
    model_version: str
    strategy: str
    degraded: bool
    items: list[tuple[str, float]]
    unscorable: list[str] = field(default_factory=list)
    recommendation_id: str = ""  # what interactions may carry for attribution
    variant: str = DEFAULT_VARIANT  # the A/B variant that answered
    explored: list[int] = field(default_factory=list)  # slots (0-based) filled at random (exploration)


@dataclass(frozen=True)
class Written:
    """What POST /interactions did: rows written, whether a replay stood instead, and per record that
    carried a recommendation_id (by its index in the batch) what attributing it found."""

    written: int
    replayed: bool
    attribution: dict = field(default_factory=dict)


@dataclass
class Hooks:
    """Callbacks through which the transport layer observes the service (metrics); all optional."""

    on_user_lookup: Callable[[str], None] | None = None  # "hit", "miss" or "bypass" per user read
    on_swap: Callable[[ModelSnapshot], None] | None = None  # a snapshot became current
    on_retrain: Callable[[float, str], None] | None = None  # (seconds, outcome) after every training run
    on_answer: Callable[[Recommendation], None] | None = None  # every answer given (impression counters)
    on_attribution: Callable[[Attribution], None] | None = None  # every interaction attributed to an answer
    on_result_cache: Callable[[str], None] | None = None  # "hit" or "miss" per answer RESULT_CACHE could keep


@dataclass
class Lane:
    """One A/B variant's serving state in this process: its settings, model holder and watcher."""

    variant: Variant
    settings: Settings
    holder: ModelHolder
    watcher: ModelWatcher | None


STOP_SECONDS = 6.0  # RecommendationService.stop's budget, inside gunicorn's graceful_timeout (10 s)


class RecommendationService:
    """The service's use cases over one process's resources.

    Parameters
    ----------
    settings : Settings
    store : RedisFeatureStore
        Writes, jobs and the model pointer.
    users : RedisFeatureStore, GuardedReads or UserCache
        Answers the request path's user reads (``get_user``): the store, behind a circuit breaker
        (REDIS_BREAKER_SECONDS > 0), behind a Redis-invalidated cache (USER_CACHE_SIZE > 0).
    holder : ModelHolder
    watcher : ModelWatcher
        The model of the first (or only) variant, and its watcher.
    trainer : Trainer or None
        The in-app trainer thread (TRAINER_IN_APP), if any.
    lanes : list of Lane, optional
        Every A/B variant's holder and watcher (VARIANTS); the first is ``holder`` and ``watcher``.
    impressions : ImpressionWriter, optional
        Where answers are logged (off the request path); None logs nothing.
    hooks : Hooks, optional
    """

    def __init__(self, settings: Settings, store: RedisFeatureStore, users, holder: ModelHolder,
                 watcher: ModelWatcher | None, trainer: Trainer | None = None, *, lanes: list[Lane] | None = None,
                 impressions: ImpressionWriter | None = None, hooks: Hooks | None = None):
        self.settings = settings
        self.store = store
        self.users = users
        self.trainer = trainer
        self.lanes = lanes or [Lane(settings.variant_list[0], settings, holder, watcher)]
        self.impressions = impressions
        self.impression_log = ImpressionLog(store, settings.impressions_max, settings.impression_ttl)
        self.hooks = hooks or Hooks()

    @property
    def holder(self) -> ModelHolder:
        """The first (or only) variant's model holder."""
        return self.lanes[0].holder

    @holder.setter
    def holder(self, holder: ModelHolder) -> None:
        self.lanes[0].holder = holder

    @property
    def watcher(self) -> ModelWatcher | None:
        """The first (or only) variant's watcher."""
        return self.lanes[0].watcher

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, settings: Settings, hooks: Hooks | None = None) -> "RecommendationService":
        """Connect (lazily: Redis may come up later) and start the background threads."""
        hooks = hooks or Hooks()
        # no idle-connection health check on the request path: against a hung Redis its own retries
        # multiply the timeout (measured 2.3 s instead of ~0.75 s); the call's retries reconnect anyway
        store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                           socket_timeout=settings.redis_timeout,
                                           connect_timeout=settings.redis_timeout, health_check_interval=0,
                                           max_interactions=settings.max_interactions,
                                           max_weight=settings.max_weight)
        users = store
        if settings.redis_breaker_seconds:  # after a failed read, requests that need Redis degrade at once
            users = GuardedReads(users, CircuitBreaker(settings.redis_breaker_seconds))
        if settings.user_cache_size:
            users = UserCache(users, settings.user_cache_size, settings.user_cache_ttl,
                              on_lookup=hooks.on_user_lookup).start()
        artifacts = artifact_store_from_settings(settings)  # MODEL_DIR, or an object store cached in MODEL_DIR
        lanes = []
        for variant in settings.variant_list:
            holder = ModelHolder()
            watcher = ModelWatcher(holder, store, artifacts, settings.watch_interval, on_swap=hooks.on_swap,
                                   pointer=pointer_of(variant)).start()
            lanes.append(Lane(variant, settings.for_variant(variant), holder, watcher))
        impressions = ImpressionWriter(ImpressionLog(store, settings.impressions_max, settings.impression_ttl)).start()
        trainer = None
        if settings.trainer_in_app:
            trainer_store = RedisFeatureStore.from_url(settings.redis_url, prefix=settings.redis_prefix,
                                                       socket_timeout=10.0, connect_timeout=2.0,
                                                       max_weight=settings.max_weight)
            trainer = Trainer(trainer_store, settings, on_result=hooks.on_retrain, artifacts=artifacts).start()
        return cls(settings, store, users, lanes[0].holder, lanes[0].watcher, trainer, lanes=lanes,
                   impressions=impressions, hooks=hooks)

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Write the impressions still buffered, then stop the background threads, in about ``timeout``
        seconds in all: gunicorn kills a worker that is not gone after its graceful timeout (10 s), and the
        buffered impressions would go with it. A trainer thread in the middle of a job is not waited for
        (its lock and active marker expire; the job can be submitted again)."""
        deadline = time.monotonic() + timeout
        if self.impressions is not None:
            self.impressions.stop(timeout=min(2.0, timeout))
        if self.trainer:
            self.trainer.stop(timeout=0)  # asks the loop to end; a running job is not waited for here
        for lane in self.lanes:
            if lane.watcher is not None:
                lane.watcher.stop(timeout=max(0.0, deadline - time.monotonic()))
        if isinstance(self.users, UserCache):
            self.users.stop(timeout=max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ recommendations

    def snapshot(self, lane: Lane | None = None) -> ModelSnapshot:
        """The model snapshot serving now (of a variant's lane; the first's by default); NoModelError before
        the first one is loaded."""
        snap = (lane or self.lanes[0]).holder.snapshot
        if snap is None:
            raise NoModelError("no model is loaded yet; train one (POST /retrain) or wait")
        return snap

    def lane(self, user_id: str) -> Lane:
        """The A/B variant's lane a user is served by (a stable hash of its id)."""
        if len(self.lanes) == 1:
            return self.lanes[0]
        chosen = assign_variant(user_id, [lane.variant for lane in self.lanes])
        return next(lane for lane in self.lanes if lane.variant is chosen)

    def _answer(self, lane: Lane, snap: ModelSnapshot, user_id: str, ranking, degraded: bool,
                rid: str, context: str) -> Recommendation:
        """The Recommendation of a ranking, logged as an impression (buffered: no I/O here)."""
        answer = Recommendation(user_id, snap.version, ranking.strategy, degraded, ranking.items, ranking.unscorable,
                                rid, lane.variant.name, list(ranking.explored))
        if self.impressions is not None and answer.items:
            self.impressions.add(Impression(rid, user_id, answer.items, answer.strategy, snap.version,
                                            lane.variant.name, answer.explored, ranking.explore_pool,
                                            context=context))
        if self.hooks.on_answer is not None:
            self.hooks.on_answer(answer)
        return answer

    def recommend(self, user_id: str, n: int | None = None, *, items: Iterable[str] | None = None,
                  exclude_seen: bool = True, exclude: Iterable[str] = (),
                  filters: Sequence[Sequence[str]] = ()) -> Recommendation:
        """The top ``n`` (DEFAULT_N when None) items for a user, from one model snapshot.

        The user's features, seen and negative items come from Redis (or the user cache) in one round
        trip. When Redis fails the answer is degraded, not an error: the model alone answers (a known
        user's training-time features, nothing excluded but ``exclude``). A user whose features were
        never written is scored with its training-time features; one whose features were set to {} by
        its indicator alone. Items the user gave a negative signal are never recommended, even with
        ``exclude_seen=False``. ``items`` restricts the candidates (at most MAX_CANDIDATES ids),
        ``exclude`` removes ids, ``filters`` keeps items with the given features (every group must
        hold; a group holds when the item has any of its names). Only catalogue items are answered.

        Raises
        ------
        InvalidInputError
            Bad user id (code ``invalid_id``), ``n`` outside [1, MAX_N], a bad candidate, exclusion or
            filter list (``invalid_parameter``).
        NoModelError
            No model is loaded yet.
        """
        uid = _check_id(user_id, "user_id")
        n = self._check_n(n)
        candidates = None if items is None else self._check_ids(items, "items", allow_empty=False)
        excluded = self._check_ids(exclude, "exclude")
        groups = self._check_filters(filters)
        lane = self.lane(uid)
        snap = self.snapshot(lane)  # one snapshot for the whole request
        degraded = False
        try:
            record = self.users.get_user(uid)
        except StoreUnavailableError:
            record, degraded = UserRecord(None, set(), set()), True
        features, seen, negative = record
        skip = seen if exclude_seen else negative
        if excluded:
            skip = skip | set(excluded)
        rid = new_recommendation_id()
        explore = self._explore(lane, rid)
        # RESULT_CACHE: the ranking is a function of the snapshot, this record and the options, so it is kept
        # in the record's user-cache entry (record.memo) and dropped with it. Always computed: answers that
        # draw at random, carry per-request candidates, exclusions or filters, or whose fold-in weights
        # depend on the clock (a recency half-life)
        memo = record.memo if (lane.settings.result_cache and explore is None and candidates is None
                               and not excluded and not groups
                               and snap.model.policy.fold_in.half_life_hours is None) else None
        key = (lane.variant.name, snap.serial, n, exclude_seen)
        kept = None if memo is None else memo.get(key)
        if memo is not None and self.hooks.on_result_cache is not None:
            self.hooks.on_result_cache("miss" if kept is None else "hit")
        if kept is not None:  # fresh lists (the kept tuples stay as they are); the catalogue's unscorable items
            # are not the user's own: they come from the snapshot
            ranking = Ranking(list(kept[0]), kept[1], list(snap.items.unscorable), approximate=kept[2])
        else:
            ranking = snap.model.rank(uid, n, user_features=features, item_features=snap.items,
                                      item_ids=candidates, exclude=skip, filters=groups,
                                      interactions=self._fold_in_items(lane, snap, uid, record), explore=explore,
                                      approximate=True)  # used only when the model was published with an index
            if memo is not None:
                for old in [k for k in memo if k[1] != snap.serial]:  # computed from an older snapshot: dead
                    memo.pop(old, None)
                if len(memo) >= RESULT_CACHE_KEYS:  # an entry keeps a few option sets; older ones go at once
                    memo.clear()
                # only the user's own answer (n items), as tuples of atoms: the garbage collector stops
                # tracking those after a few collections (see UserCache)
                memo[key] = (tuple(ranking.items), ranking.strategy, ranking.approximate)
        context = "restricted" if candidates is not None or groups else "user"
        return self._answer(lane, snap, uid, ranking, degraded, rid, context)

    @staticmethod
    def _explore(lane: Lane, rid: str) -> tuple[float, int] | None:
        """(EXPLORATION_RATE, the answer's seed) when the variant explores, else None."""
        rate = lane.settings.exploration_rate
        return (rate, exploration_seed(rid)) if rate > 0 else None

    def _fold_in_items(self, lane: Lane, snap: ModelSnapshot, user_id: str,
                       record: UserRecord) -> dict[str, float] | None:
        """Item -> weight of the user's positive interactions the model did not train on (FOLD_IN): all of
        its recent items when the model does not know the user, those written after the model's training
        snapshot when it does; weighted by the model's fold-in recency rule."""
        if not lane.settings.fold_in or not record.recent:
            return None
        recent = record.recent
        if user_id in snap.model.user_space.id_index:
            since = snap.data_snapshot_at
            recent = {item: t for item, t in recent.items() if t > since}
            if not recent:
                return None
        return snap.model.policy.fold_in.weights(recent, time.time())

    def recommend_session(self, recent: Iterable[str | tuple[str, float]], n: int | None = None, *,
                          user_id: str | None = None, features: Mapping[str, float] | None = None,
                          items: Iterable[str] | None = None, exclude_seen: bool = True,
                          exclude: Iterable[str] = (), filters: Sequence[Sequence[str]] = ()) -> Recommendation:
        """Recommendations for a session: the items it interacted with (``recent``: ids, or (id, weight > 0)
        pairs; repeats add up) folded in, with optional ``features`` and ``user_id``; nothing is written.

        With a ``user_id`` its stored record is read too: its features unless ``features`` are given, its
        seen items (excluded with ``exclude_seen``) and its own fold-in items, to which the session's are
        added. ``exclude_seen`` also leaves out the session's items. Options as :meth:`recommend`. The
        strategy is "interactions" for a user the model knows, "session" otherwise (or a plainer one when
        the session's items cannot be scored).

        Raises
        ------
        InvalidInputError
            Bad ids, weights, n, lists or filters (``invalid_parameter``, ``invalid_body``).
        NoModelError
            No model is loaded yet.
        """
        weights = self._check_session(recent)
        n = self._check_n(n)
        uid = None if user_id is None else _check_id(user_id, "user_id")
        candidates = None if items is None else self._check_ids(items, "items", allow_empty=False)
        excluded = set(self._check_ids(exclude, "exclude"))
        groups = self._check_filters(filters)
        if features is not None:
            try:
                features = check_features(features, self.settings.max_weight)
            except ValueError as exc:
                raise InvalidInputError(str(exc), code="invalid_body") from None
        rid = new_recommendation_id()
        lane = self.lane(uid if uid is not None else rid)  # a session without a user: a variant per answer
        snap = self.snapshot(lane)
        degraded = False
        record = UserRecord(None, set(), set())
        if uid is not None:
            try:
                record = self.users.get_user(uid)
            except StoreUnavailableError:
                degraded = True
        folded = dict(self._fold_in_items(lane, snap, uid, record) or {}) if uid is not None else {}
        for item, weight in weights.items():
            folded[item] = folded.get(item, 0.0) + weight
        skip = excluded | record.negative | ((record.seen | set(weights)) if exclude_seen else set())
        user_features = features if features is not None else record.features
        ranking = snap.model.rank(uid if uid is not None else SESSION_USER, n, user_features=user_features,
                                  item_features=snap.items, item_ids=candidates, exclude=skip, filters=groups,
                                  interactions=folded or None, explore=self._explore(lane, rid), approximate=True)
        if ranking.strategy == STRATEGY_INTERACTIONS and (uid is None or uid not in snap.model.user_space.id_index):
            ranking.strategy = STRATEGY_SESSION
        return self._answer(lane, snap, uid if uid is not None else "", ranking, degraded, rid, "session")

    def _check_session(self, recent) -> dict[str, float]:
        """item id -> weight of a session's recent items (ids weigh 1); InvalidInputError otherwise."""
        limit = self.settings.max_session_items
        entries = [entry if isinstance(entry, tuple) else (entry, 1.0) for entry in recent]
        if len(entries) > limit:
            raise InvalidInputError(f"recent may list at most {limit} items", code="invalid_body")
        out: dict[str, float] = {}
        for item, weight in entries:
            try:
                item = check_id(item, "each item in recent")
                weight = check_weight(f"recent item {item!r}", weight, self.settings.max_weight)
            except ValueError as exc:
                raise InvalidInputError(str(exc), code="invalid_body") from None
            if weight <= 0:
                raise InvalidInputError(f"recent item {item!r} has weight {weight:g}; session items need weight > 0",
                                        code="invalid_body")
            out[item] = out.get(item, 0.0) + weight
        return out

    def similar_items(self, item_id: str, n: int | None = None, *, exclude: Iterable[str] = (),
                      filters: Sequence[Sequence[str]] = ()) -> tuple[str, bool, list[tuple[str, float]]]:
        """(model version, whether the model knows the item, the ``n`` nearest catalogue items by cosine).

        Known items and new catalogue items with features alike; see ScoringIndex.similar for what
        "similar" means.

        Raises
        ------
        InvalidInputError
            Bad id, ``n``, exclusion or filter list.
        UnknownItemError
            The item is neither known to the model nor a catalogue item with usable features.
        NoModelError
            No model is loaded yet.
        """
        iid = _check_id(item_id, "item_id")
        n = self._check_n(n)
        excluded = self._check_ids(exclude, "exclude")
        groups = self._check_filters(filters)
        snap = self.snapshot()
        items = snap.model.index.similar(iid, n, item_features=snap.items, exclude=excluded, filters=groups).items
        return snap.version, iid in snap.model.item_space.id_index, items

    def _check_n(self, n: int | None) -> int:
        s = self.settings
        n = s.default_n if n is None else n
        if not 1 <= n <= s.max_n:
            raise InvalidInputError(f"n must be between 1 and {s.max_n}, got {n}", code="invalid_parameter")
        return n

    def _check_ids(self, ids: Iterable[str], name: str, allow_empty: bool = True) -> list[str]:
        """A list of valid ids (at most MAX_CANDIDATES), or InvalidInputError naming the parameter."""
        ids = list(ids)
        if not ids and not allow_empty:
            raise InvalidInputError(f"{name} must be a comma-separated list of item ids", code="invalid_parameter")
        if len(ids) > self.settings.max_candidates:
            raise InvalidInputError(f"{name} may list at most {self.settings.max_candidates} ids",
                                    code="invalid_parameter")
        try:
            return [check_id(i, f"each id in {name}") for i in ids]
        except ValueError as exc:
            raise InvalidInputError(str(exc), code="invalid_parameter") from None

    def _check_filters(self, filters: Sequence[Sequence[str]]) -> list[list[str]]:
        """Feature-name groups, each non-empty and valid; at most MAX_FILTER_NAMES names in all."""
        groups = [list(group) for group in filters]
        if sum(map(len, groups)) > MAX_FILTER_NAMES:
            raise InvalidInputError(f"filters may name at most {MAX_FILTER_NAMES} features", code="invalid_parameter")
        for group in groups:
            if not group:
                raise InvalidInputError("each filter needs at least one feature name", code="invalid_parameter")
            for name in group:
                try:
                    check_feature_name(name)
                except ValueError as exc:
                    raise InvalidInputError(f"filter: {exc}", code="invalid_parameter") from None
        return groups

    # ------------------------------------------------------------------ features and interactions

    def set_user_features(self, user_id: str, features: Mapping[str, float]) -> int:
        """Replace a user's features (atomically); returns how many were written.

        Raises
        ------
        InvalidInputError
            Bad id (``invalid_id``), or bad feature names or weights (``invalid_body``): nothing is written.
        StoreUnavailableError
            Redis did not answer.
        """
        return self._set_features("user", user_id, features, self.store.set_user_features)

    def set_item_features(self, item_id: str, features: Mapping[str, float]) -> int:
        """Replace an item's features and add it to the catalogue; see :meth:`set_user_features`."""
        return self._set_features("item", item_id, features, self.store.set_item_features)

    def _set_features(self, kind: str, entity_id: str, features: Mapping[str, float], write) -> int:
        entity_id = _check_id(entity_id, f"{kind}_id")
        if len(features) > MAX_FEATURES_PER_ENTITY:
            raise InvalidInputError(f"at most {MAX_FEATURES_PER_ENTITY} features per entity", code="invalid_body")
        try:
            write(entity_id, features)
        except ValueError as exc:
            raise InvalidInputError(str(exc), code="invalid_body") from None
        return len(features)

    def add_interactions(self, records: list[Mapping], idempotency_key: str | None = None) -> Written:
        """Append interactions to the training log and the users' seen sets, exactly once per key.

        A record may carry the ``recommendation_id`` of the answer it came from: a positive interaction
        (weight > 0) with an item that answer showed is attributed to its position (once per answer and
        position; a retry replayed by its Idempotency-Key attributes nothing again). ``Written.attribution``
        says, for each record that carried an id, what was found; an unknown or expired id never refuses
        the interaction.

        Raises
        ------
        InvalidInputError
            Too many records or a bad one (``invalid_body``); InvalidIdempotencyKeyError for a bad key.
        IdempotencyConflictError
            The key was used before for different records.
        StoreUnavailableError
            Redis did not answer.
        """
        limit = self.settings.max_interactions_per_request
        if len(records) > limit:
            raise InvalidInputError(f"at most {limit} interactions per request", code="invalid_body")
        claims = []
        for n, record in enumerate(records):
            rid = record.get("recommendation_id") if isinstance(record, Mapping) else None
            if rid is None:
                continue
            if not isinstance(rid, str) or not RECOMMENDATION_ID.match(rid):
                raise InvalidInputError(f"interaction #{n}: recommendation_id must be the 32 hex characters an "
                                        f"answer gave, got {str(rid)[:40]!r}", code="invalid_body")
            claims.append(n)
        try:
            result = self.store.add_interactions_once(records, idempotency_key=idempotency_key,
                                                      ttl=self.settings.idempotency_ttl)
        except InvalidInputError:
            raise
        except ValueError as exc:
            if type(exc) is not ValueError:  # IdempotencyConflictError and other domain errors pass
                raise
            raise InvalidInputError(str(exc), code="invalid_body") from None
        attribution: dict[int, Attribution] = {}
        if claims and not result.replayed:
            positive = [n for n in claims if float(records[n].get("weight", 1.0)) > 0]
            for n in set(claims) - set(positive):
                attribution[n] = Attribution("not_positive")
            claims_of = {n: (records[n]["recommendation_id"], str(records[n]["user_id"]), str(records[n]["item_id"]))
                         for n in positive}
            found = dict(zip(positive, self.impression_log.attribute([claims_of[n] for n in positive])))
            # an answer given moments ago may still be in a writer's buffer (any process): wait until it
            # must have been written, then look once more
            young = [n for n in positive if found[n].status == "unknown_or_expired"
                     and 0 <= recommendation_age(claims_of[n][0]) < ATTRIBUTION_GRACE]
            if young:
                time.sleep(max(0.0, ATTRIBUTION_GRACE - min(recommendation_age(claims_of[n][0]) for n in young)))
                found.update(zip(young, self.impression_log.attribute([claims_of[n] for n in young])))
            for n, outcome in found.items():
                attribution[n] = outcome
                if outcome.status == "attributed" and self.hooks.on_attribution is not None:
                    self.hooks.on_attribution(outcome)
        return Written(result.written, result.replayed, dict(sorted(attribution.items())))

    def stats(self, since: float | None = None, until: float | None = None) -> dict:
        """Impressions and attributed interactions over [since, until) (seconds; default the last 24 hours):
        click-through rate in total, by position, strategy, variant and for the explored slots, and, with
        two or more variants, a two-proportion z-test of each variant's CTR against the first's.

        Counters are kept per hour of the impression: the window is widened to whole hours.

        Raises
        ------
        InvalidInputError
            ``since`` >= ``until``, or a window over 400 days (``invalid_parameter``).
        """
        until = time.time() if until is None else until
        since = until - 24 * 3600 if since is None else since
        if not since < until:
            raise InvalidInputError("since must be before until", code="invalid_parameter")
        try:
            counters = self.impression_log.counters(since, until)
        except ValueError as exc:
            raise InvalidInputError(str(exc), code="invalid_parameter") from None
        slots, clicks = counters.get("imp:slots", 0), counters.get("click:total", 0)
        explored, explored_clicks = counters.get("imp:explored", 0), counters.get("click:explored", 0)
        by_variant = ctr_table(counters, "variant")
        out = {"since": since, "until": until, "answers": counters.get("imp:answers", 0), "impressions": slots,
               "clicks": clicks, "ctr": clicks / slots if slots else None,
               "by_position": dict(sorted(ctr_table(counters, "pos").items(), key=lambda kv: int(kv[0]))),
               "by_strategy": ctr_table(counters, "strategy"), "by_variant": by_variant,
               "explored": {"impressions": explored, "clicks": explored_clicks,
                            "ctr": explored_clicks / explored if explored else None}}
        names = [lane.variant.name for lane in self.lanes]
        if len(names) > 1:
            base = by_variant.get(names[0], {"clicks": 0, "impressions": 0})
            out["variant_tests"] = {
                f"{name} vs {names[0]}": two_proportion_test(
                    by_variant.get(name, {}).get("clicks", 0), by_variant.get(name, {}).get("impressions", 0),
                    base["clicks"], base["impressions"]) for name in names[1:]}
        return out

    # ------------------------------------------------------------------ lifecycle

    def delete_item(self, item_id: str) -> dict:
        """Take an item out of the catalogue: no process recommends it (or answers it as similar) after
        WATCH_INTERVAL; a later PUT of its features brings it back. Returns {"item_id", "removed"}."""
        iid = _check_id(item_id, "item_id")
        return {"item_id": iid, "removed": self.store.remove_item(iid)}

    def erase_user(self, user_id: str) -> dict:
        """Erase everything kept under a user's id (features, seen and negative items, its interactions in
        the log); the next retrain forgets the user. Returns what was erased."""
        uid = _check_id(user_id, "user_id")
        return {"user_id": uid, "erased": self.store.erase_user(uid)}

    def user_info(self, user_id: str) -> dict:
        """What the store holds about a user and whether the serving model knows it."""
        uid = _check_id(user_id, "user_id")
        info = {"user_id": uid, **self.store.describe_user(uid)}
        snap = self.holder.snapshot
        info["known_to_model"] = None if snap is None else uid in snap.model.user_space.id_index
        return info

    def item_info(self, item_id: str) -> dict:
        """What the store holds about an item and whether the serving model knows it."""
        iid = _check_id(item_id, "item_id")
        info = {"item_id": iid, **self.store.describe_item(iid)}
        snap = self.holder.snapshot
        info["known_to_model"] = None if snap is None else iid in snap.model.item_space.id_index
        return info

    # ------------------------------------------------------------------ retraining and the model

    def submit_retrain(self, force: bool = False) -> tuple[str, bool]:
        """Queue a retrain job: (job id, created); the active job's id when one is queued or running."""
        return jobs.submit_job(self.store, force=force, ttl=self.settings.retrain_lock_ttl)

    def retrain_job(self, job_id: str) -> dict:
        """A job's status, metrics and version.

        Raises
        ------
        InvalidInputError
            A job id longer than 64 characters (``invalid_id``).
        NotFoundError
            No such job (code ``unknown_job``).
        """
        if len(job_id) > 64:
            raise InvalidInputError("job ids are at most 64 characters", code="invalid_id")
        job = jobs.get_job(self.store, job_id, lock_ttl=self.settings.retrain_lock_ttl)
        if job is None:
            raise NotFoundError(f"no retrain job {job_id!r}", code="unknown_job")
        return job

    def recent_retrains(self, limit: int | None = None) -> list[dict]:
        """The newest retrain jobs, newest first (``limit``: 1 to jobs.HISTORY_LENGTH, default 20), each as
        :meth:`retrain_job` reads it: status, decision, metrics and version. Jobs whose record expired
        (7 days) are left out.

        Raises
        ------
        InvalidInputError
            ``limit`` outside [1, HISTORY_LENGTH] (``invalid_parameter``).
        StoreUnavailableError
            Redis did not answer.
        """
        limit = DEFAULT_HISTORY_LIMIT if limit is None else limit
        if not 1 <= limit <= jobs.HISTORY_LENGTH:
            raise InvalidInputError(f"limit must be between 1 and {jobs.HISTORY_LENGTH}, got {limit}",
                                    code="invalid_parameter")
        return jobs.recent_jobs(self.store, limit, lock_ttl=self.settings.retrain_lock_ttl)

    def model_info(self) -> dict:
        """The serving model (the first variant's): version, when trained and loaded, sizes, parameters, policy
        and metrics; with VARIANTS, ``variants`` gives each variant's share, settings and the same fields."""
        info = self._model_fields(self.snapshot())
        if len(self.lanes) > 1:
            info["variants"] = {}
            for lane in self.lanes:
                fields = {"share": lane.variant.share, "settings": dict(lane.variant.overrides)}
                if lane.holder.snapshot is not None:
                    fields.update(self._model_fields(lane.holder.snapshot))
                info["variants"][lane.variant.name] = fields
        return info

    @staticmethod
    def _model_fields(snap: ModelSnapshot) -> dict:
        extra = snap.meta.get("extra", {})
        return {"version": snap.version, "trained_at": extra.get("trained_at"), "loaded_at": snap.loaded_at,
                "worker_pid": os.getpid(), "users": snap.model.n_users, "items": snap.model.n_items,
                "new_items_with_features": len(snap.items.extra_ids),
                "params": {"indicators": snap.model.indicators, "row_norm": snap.model.row_norm,
                           **snap.meta.get("lightfm_params", {})},
                "policy": snap.model.policy.to_dict(),
                "metrics": extra.get("metrics", {})}

    def readiness(self) -> dict:
        """Whether this process can answer: a model is loaded and Redis answers (``ready``), and why not."""
        snap = self.holder.snapshot
        redis_ok = self.store.ping()
        watcher = self.watcher
        every_variant = all(lane.holder.snapshot is not None for lane in self.lanes)
        body = {"ready": every_variant and redis_ok, "model_loaded": snap is not None,
                "model_version": snap.version if snap else None, "redis": "ok" if redis_ok else "unavailable",
                "watcher_last_check_age_s": round(time.time() - watcher.last_check, 3) if watcher.last_check
                else None}
        if watcher.last_error:
            body["watcher_error"] = watcher.last_error
        if self.holder.failed_versions:
            body["skipped_versions"] = sorted(self.holder.failed_versions)
        if len(self.lanes) > 1:
            body["variants"] = {lane.variant.name: lane.holder.snapshot.version if lane.holder.snapshot else None
                                for lane in self.lanes}
        if self.impressions is not None and self.impressions.dropped:
            body["impressions_dropped"] = self.impressions.dropped
        if self.impressions is not None and self.impressions.unserialisable:
            body["impressions_unserialisable"] = self.impressions.unserialisable
        return body


def _check_id(value: object, what: str) -> str:
    """A canonical id, or InvalidInputError (code ``invalid_id``)."""
    try:
        return check_id(value, what)
    except ValueError as exc:
        raise InvalidInputError(str(exc), code="invalid_id") from None
