"""Every Redis key the project uses, built in this one module (and parsed back here too).

=================================== ========== ===================================================
key (prefix ``reco:``)              type       holds
=================================== ========== ===================================================
``reco:user:{id}:features``         hash       feature name -> weight (float, written with repr)
``reco:user:{id}:seen``             set        items the user interacted with (excluded from answers)
``reco:user:{id}:negative``         set        items the user gave weight <= 0 (never recommended back)
``reco:user:{id}:log``              list       stream ids of the user's interactions (erasure)
``reco:user:{id}:recent``           zset       the user's latest positive items -> time (fold-in), capped
``reco:user:{id}:batch``            string     precomputed top-N (JSON) written by reco-batch --redis
``reco:item:{id}:features``         hash       feature name -> weight
``reco:users``                      set        users that have a feature hash (O(1) counts)
``reco:items``                      set        the item catalogue: every item that may be recommended
``reco:items:changed``              zset       item id -> time its features were last written
``reco:interactions``               stream     user_id, item_id, weight, timestamp: the training log
``reco:once:key:{key}``             string     ``<count>:<digest>`` of a batch written under a client key
``reco:once:call:{token}``          string     the same, for one call's own retries (60 s)
``reco:model:current``              string     version id of the published model
``reco:retrain:lock``               string     single-flight training lock (TTL, refreshed)
``reco:retrain:active``             string     the job queued or running
``reco:retrain:queue``              list       job ids waiting for a trainer
``reco:retrain:history``            list       the newest job ids, newest first (capped; GET /retrain)
``reco:job:{id}``                   hash       one retrain job's status, metrics and version
``reco:impressions``                stream     what each answer showed (capped; recommender.store.impressions)
``reco:imp:{id}``                   hash       one answer, for attribution (TTL IMPRESSION_TTL)
``reco:attributions``               stream     interactions attributed to an answer's position (capped)
``reco:stats:{hour}:{shard}``       hash       impression and click counters of one hour (8 shards)
``reco:model:variant:{name}``       string     the published version of an A/B variant
=================================== ========== ===================================================

``{id}`` is the id as given (ids may contain ``:``). Everything a request reads about one user lives
under ``<prefix>user:``, which is what the user cache's CLIENT TRACKING follows.
"""

from __future__ import annotations

FEATURES = ":features"
SEEN = ":seen"
NEGATIVE = ":negative"
LOG = ":log"
RECENT = ":recent"
BATCH = ":batch"
USER_SUFFIXES = (FEATURES, SEEN, NEGATIVE, LOG, RECENT, BATCH)
#: the field that marks a feature hash as explicitly empty (PUT {}): "" is not a valid feature name, and
#: Redis keeps no empty hash, so without it "no features" could not be told from "never written"
EMPTY_MARKER = ""
_GLOB_SPECIAL = "\\*?[]"


class Keys:
    """Key names under one prefix. Ids must already be validated (see recommender.features.check_id)."""

    def __init__(self, prefix: str = "reco:"):
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.user_prefix = prefix + "user:"  # every per-user key starts with this (user-cache tracking)
        self.item_prefix = prefix + "item:"
        self.users = prefix + "users"
        self.items = prefix + "items"
        self.items_changed = prefix + "items:changed"
        self.interactions = prefix + "interactions"
        self.model_current = prefix + "model:current"
        self.retrain_lock = prefix + "retrain:lock"
        self.retrain_active = prefix + "retrain:active"
        self.retrain_queue = prefix + "retrain:queue"
        self.retrain_history = prefix + "retrain:history"
        self.impressions = prefix + "impressions"
        self.attributions = prefix + "attributions"

    def user_features(self, user_id: str) -> str:
        """Feature hash of a user."""
        return f"{self.user_prefix}{user_id}{FEATURES}"

    def user_seen(self, user_id: str) -> str:
        """Seen-items set of a user."""
        return f"{self.user_prefix}{user_id}{SEEN}"

    def user_negative(self, user_id: str) -> str:
        """Set of the items a user gave a negative signal (weight <= 0)."""
        return f"{self.user_prefix}{user_id}{NEGATIVE}"

    def user_log(self, user_id: str) -> str:
        """List of the stream ids of a user's interactions (what erasing the user deletes from the log)."""
        return f"{self.user_prefix}{user_id}{LOG}"

    def user_recent(self, user_id: str) -> str:
        """Sorted set of a user's latest positive items, scored by the time of the interaction (fold-in)."""
        return f"{self.user_prefix}{user_id}{RECENT}"

    def user_batch(self, user_id: str) -> str:
        """A user's precomputed top-N (JSON), written by a batch run."""
        return f"{self.user_prefix}{user_id}{BATCH}"

    def user_keys(self, user_id: str) -> list[str]:
        """Every per-user key of a user."""
        return [f"{self.user_prefix}{user_id}{suffix}" for suffix in USER_SUFFIXES]

    def item_features(self, item_id: str) -> str:
        """Feature hash of an item."""
        return f"{self.item_prefix}{item_id}{FEATURES}"

    def once_key(self, idempotency_key: str) -> str:
        """Guard of an interaction batch written under a client's Idempotency-Key."""
        return f"{self.prefix}once:key:{idempotency_key}"

    def once_call(self, token: str = "") -> str:
        """Guard of one call's interaction batch (``token``: random per call; "" gives the common head)."""
        return f"{self.prefix}once:call:{token}"

    def impression(self, recommendation_id: str) -> str:
        """Hash of one answer as shown (attribution looks it up)."""
        return f"{self.prefix}imp:{recommendation_id}"

    def stats(self, hour: int, shard: int) -> str:
        """Counters of the impressions shown in one hour (hours since the epoch), one of a few shards."""
        return f"{self.prefix}stats:{hour}:{shard}"

    def model_pointer(self, variant: str | None = None) -> str:
        """The published version of an A/B variant; the one model's pointer when None."""
        return self.model_current if variant is None else f"{self.prefix}model:variant:{variant}"

    def job(self, job_id: str) -> str:
        """Hash of one retrain job."""
        return f"{self.prefix}job:{job_id}"

    # ------------------------------------------------------------------ parsing and matching

    def users_of(self, key: str) -> list[str]:
        """User ids a per-user key may belong to (both readings when an id itself ends like a suffix);
        [] for any other key."""
        if not key.startswith(self.user_prefix):
            return []
        rest = key[len(self.user_prefix):]
        return [rest[:-len(suffix)] for suffix in USER_SUFFIXES if rest.endswith(suffix)]

    def feature_pattern(self, kind: str) -> str:
        """SCAN MATCH pattern of every feature hash of ``kind`` ("user" or "item"), prefix escaped."""
        return glob_escape(self._head(kind)) + "*" + glob_escape(FEATURES)

    def entity_of_feature_key(self, kind: str, key: str) -> str:
        """The id inside a feature-hash key of ``kind``."""
        return key[len(self._head(kind)):-len(FEATURES)]

    def all_pattern(self) -> str:
        """SCAN MATCH pattern of every key under the prefix."""
        return glob_escape(self.prefix) + "*"

    def _head(self, kind: str) -> str:
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        return self.user_prefix if kind == "user" else self.item_prefix


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so that ``text`` matches itself literally in SCAN MATCH."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)
