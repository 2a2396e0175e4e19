"""Every Redis key the project uses, built in this one module (and parsed back here too).

The layout is the same on a single Redis and on a Redis Cluster: keys carry hash tags (the part in
``{...}``, the only part of a key Redis Cluster hashes to pick its slot) so that

- everything a request reads about one user shares a slot (one round trip to one node), and users and
  items spread over every shard (a tag per entity);
- the interaction log and the set of users with features are ``PARTITIONS`` keys each (see
  :class:`Partitioned`), spread evenly over the slot space, so no single key takes every write;
- the keys one atomic step touches (a MULTI/EXEC, a script call) always share a slot.

========================================== ======= ============================================================
key (prefix ``reco:``)                     type    holds
========================================== ======= ============================================================
``reco:user:{<id>}:features``              hash    feature name -> weight (float, written with repr)
``reco:user:{<id>}:seen``                  set     items the user interacted with (excluded from answers)
``reco:user:{<id>}:negative``              set     items the user gave weight <= 0 (never recommended back)
``reco:user:{<id>}:recent``                zset    the user's latest positive items -> time (fold-in), capped
``reco:user:{<id>}:batch``                 string  precomputed top-N (JSON) written by reco-batch --redis
``reco:item:{<id>}:features``              hash    feature name -> weight
``reco:interactions:{<p>}``                stream  partition p of the training log: user_id, item_id, weight,
                                                   timestamp of the users whose id hashes to p
``reco:interactions:{<p>}:log:<id>``       list    stream ids of a user's entries in its partition (erasure)
``reco:users:{<p>}``                       set     partition p of the users that have a feature hash (counts)
``reco:items:{catalogue}``                 set     the item catalogue: every item that may be recommended
``reco:items:{catalogue}:changed``         zset    item id -> time its features were last written
``reco:once:key:{<key>}``                  string  ``<count>:<digest>`` of a batch written under a client key
``reco:once:{<tag>}:key:<key>``            string  the same, per slot the batch wrote to (Redis Cluster only)
``reco:once:call:{<token>}``               string  one call's own guard (60 s); ``reco:once:{<tag>}:call:...``
                                                   per slot on a cluster
``reco:model:current``                     string  version id of the published model
``reco:{retrain}:lock``                    string  single-flight training lock (TTL, refreshed)
``reco:{retrain}:active``                  string  the job queued or running
``reco:{retrain}:queue``                   list    job ids waiting for a trainer
``reco:{retrain}:history``                 list    the newest job ids, newest first (capped; GET /retrain)
``reco:{retrain}:job:<id>``                hash    one retrain job's status, metrics and version
``reco:model:variant:<name>``              string  the published version of an A/B variant
``reco:impressions:{<p>}``                 stream  partition p of what each answer showed (capped; the
                                                   partition of a writer's batch: recommender.store.impressions)
``reco:imp:{<s>}:<window>``                hash    the answers of one 10 s window (of their ids' time), one of 8
                                                   shards, for attribution: rid -> JSON, and the claim of each
                                                   attributed slot, ``<rid>:click:<position>`` (HSETNX); expires
                                                   IMPRESSION_TTL after the window ends
``reco:imp:{<rid>}``                       string  one answer, for attribution: the layout before 0.7, still read
``reco:imp:{<rid>}:click:<position>``      string  the claim of one slot of such an answer (SET NX; same TTL)
``reco:attributions:{<p>}``                stream  partition p of the attributed interactions (capped)
``reco:stats:<hour>:<shard>``              hash    impression and click counters of one hour (8 shards)
========================================== ======= ============================================================

``<s>`` is one of 8 partition tags chosen by a CRC32 of the recommendation id.
``<id>`` inside braces is the id with ``%`` and ``}`` percent-encoded (:func:`tag`), so the tag is the whole
id, never empty and never cut short (ids may contain ``:``, ``{`` and ``}``); ``<p>`` is a partition's tag
(``0.1``, ``1.3``, ...: :class:`Partitioned`). Everything a request reads about one user lives under
``<prefix>user:``, which is what the user cache's CLIENT TRACKING follows. A prefix that itself holds a
hash tag (``{reco}:``) puts every key in one slot: valid, but then one shard holds everything.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

FEATURES = ":features"
SEEN = ":seen"
NEGATIVE = ":negative"
RECENT = ":recent"
BATCH = ":batch"
USER_SUFFIXES = (FEATURES, SEEN, NEGATIVE, RECENT, BATCH)
#: the field that marks a feature hash as explicitly empty (PUT {}): "" is not a valid feature name, and
#: Redis keeps no empty hash, so without it "no features" could not be told from "never written"
EMPTY_MARKER = ""
#: partitions of the interaction log and of the users set. Fixed: a user's log entries are found (erasure)
#: in the partition its id hashes to, so changing it needs a migration of the log (recommender.store.migrate)
PARTITIONS = 16
SLOTS = REDIS_CLUSTER_HASH_SLOTS  # 16384
_GLOB_SPECIAL = "\\*?[]"
_UNTAG = re.compile(r"%(25|7D)")


def tag(text: str) -> str:
    """``text`` made safe to sit between ``{`` and ``}`` as a whole hash tag: ``%`` -> ``%25``, ``}`` -> ``%7D``.

    Without it an id starting with ``}`` would give an empty tag (Redis then hashes the whole key, and a
    user's keys would land in different slots) and one containing ``}`` would be cut short.
    """
    return text.replace("%", "%25").replace("}", "%7D")


def untag(text: str) -> str:
    """The inverse of :func:`tag`."""
    return _UNTAG.sub(lambda m: "%" if m.group(1) == "25" else "}", text)


IMPRESSION_SHARDS = 8  # attribution hashes per 10 s window (keys.impression_bucket)
IMPRESSION_WINDOW = 10  # seconds of answers per attribution hash


def impression_window(recommendation_id: str) -> int:
    """The IMPRESSION_WINDOW-second window (since the epoch) of an answer, from its recommendation id's first 12
    hex characters (milliseconds)."""
    return int(recommendation_id[:12], 16) // (IMPRESSION_WINDOW * 1000)


def slot_of(key: str) -> int:
    """The Redis Cluster hash slot (0-16383) of a key, by Redis's rule (CRC16 of the hash tag, if any)."""
    return key_slot(key.encode("utf-8", "surrogateescape"))


@lru_cache(maxsize=None)
def partition_tags(n: int) -> tuple[str, ...]:
    """``n`` short hash tags, the p-th hashing into the p-th ``1/n`` of the slot space.

    Found by search (``"p.k"`` for k = 0, 1, ...: about n tries each), so the partitions of one structure
    spread evenly over the masters of a cluster whose slots are split into ranges, as ``redis-cli --cluster
    create`` and most operators split them: with 3 masters and 16 partitions, 5, 6 and 5 per master.
    """
    if not 1 <= n <= SLOTS:
        raise ValueError(f"partition count must be between 1 and {SLOTS}, got {n!r}")
    tags = []
    for p in range(n):
        low, high = p * SLOTS // n, (p + 1) * SLOTS // n
        k = 0
        while not low <= key_slot(f"{p}.{k}".encode()) < high:
            k += 1
        tags.append(f"{p}.{k}")
    return tuple(tags)


class Partitioned:
    """One logical structure kept as ``n`` keys (``<base>:{<tag>}``), an entity's part chosen by its id.

    The reusable rule for anything every writer would otherwise append to (the interaction log, the users
    set, an impression log): ``part_of(id)`` is the partition whose slot range holds the slot of the
    entity's own tag, so on a cluster split into slot ranges an entity's part usually lives on the same
    master as the entity's keys. Readers read all ``keys``. The mapping depends only on the id and ``n``.

    Parameters
    ----------
    base : str
        The structure's key without tag, e.g. ``"reco:interactions"``.
    n : int
        Number of partitions (keys), 1 to 16384.
    """

    def __init__(self, base: str, n: int = PARTITIONS):
        self.base = base
        self.n = n
        self.tags = partition_tags(n)
        self.keys = [f"{base}:{{{t}}}" for t in self.tags]

    def part_of(self, entity_id: str) -> int:
        """Index of the partition of an entity (by the slot of its tag)."""
        return key_slot(("{" + tag(entity_id) + "}").encode("utf-8", "surrogateescape")) * self.n // SLOTS

    def key_of(self, entity_id: str) -> str:
        """Key of the partition of an entity."""
        return self.keys[self.part_of(entity_id)]

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(self.keys)


class Keys:
    """Key names under one prefix. Ids must already be validated (see recommender.features.check_id)."""

    def __init__(self, prefix: str = "reco:"):
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {prefix!r}")
        self.prefix = prefix
        self.user_prefix = prefix + "user:"  # every key a request reads starts with this (user-cache tracking)
        self.item_prefix = prefix + "item:"
        self.interactions = Partitioned(prefix + "interactions")
        self.users = Partitioned(prefix + "users")
        self.items = prefix + "items:{catalogue}"
        self.items_changed = prefix + "items:{catalogue}:changed"
        self.model_current = prefix + "model:current"
        self.retrain_lock = prefix + "{retrain}:lock"
        self.retrain_active = prefix + "{retrain}:active"
        self.retrain_queue = prefix + "{retrain}:queue"
        self.retrain_history = prefix + "{retrain}:history"
        self.impressions = Partitioned(prefix + "impressions")
        self.attributions = Partitioned(prefix + "attributions")

    def user_key(self, user_id: str, suffix: str) -> str:
        """The per-user key of ``user_id`` with ``suffix`` (one of USER_SUFFIXES)."""
        return f"{self.user_prefix}{{{tag(user_id)}}}{suffix}"

    def user_features(self, user_id: str) -> str:
        """Feature hash of a user."""
        return self.user_key(user_id, FEATURES)

    def user_seen(self, user_id: str) -> str:
        """Seen-items set of a user."""
        return self.user_key(user_id, SEEN)

    def user_negative(self, user_id: str) -> str:
        """Set of the items a user gave a negative signal (weight <= 0)."""
        return self.user_key(user_id, NEGATIVE)

    def user_recent(self, user_id: str) -> str:
        """Sorted set of a user's latest positive items, scored by the time of the interaction (fold-in)."""
        return self.user_key(user_id, RECENT)

    def user_batch(self, user_id: str) -> str:
        """A user's precomputed top-N (JSON), written by a batch run."""
        return self.user_key(user_id, BATCH)

    def user_keys(self, user_id: str) -> list[str]:
        """Every key under ``<prefix>user:`` of a user (one slot)."""
        return [self.user_key(user_id, suffix) for suffix in USER_SUFFIXES]

    def user_log(self, user_id: str) -> str:
        """List of the stream ids of a user's interactions, in the slot of the user's log partition (what
        erasing the user deletes from the log)."""
        return f"{self.interactions.key_of(user_id)}:log:{user_id}"

    def interaction_keys(self, user_id: str) -> tuple[int, int, str, str, str, str, str]:
        """What writing one of a user's interactions touches, built in one go (the write path builds them once
        per user and batch): (the user's slot, its log partition's index, that partition's stream, the
        user's log list there, seen, negative, recent)."""
        user_tag = tag(user_id)
        slot = key_slot(("{" + user_tag + "}").encode("utf-8", "surrogateescape"))
        p = slot * self.interactions.n // SLOTS
        stream = self.interactions.keys[p]
        head = f"{self.user_prefix}{{{user_tag}}}"
        return slot, p, stream, f"{stream}:log:{user_id}", head + SEEN, head + NEGATIVE, head + RECENT

    def log_partition(self, user_id: str) -> str:
        """The interaction-log partition (stream) that holds a user's interactions."""
        return self.interactions.key_of(user_id)

    def users_part(self, user_id: str) -> str:
        """The partition of the users set that holds a user (same slot as its log partition)."""
        return self.users.key_of(user_id)

    def item_features(self, item_id: str) -> str:
        """Feature hash of an item."""
        return f"{self.item_prefix}{{{tag(item_id)}}}{FEATURES}"

    def once_key(self, idempotency_key: str) -> str:
        """Guard of an interaction batch written under a client's Idempotency-Key (its own slot)."""
        return f"{self.prefix}once:key:{{{tag(idempotency_key)}}}"

    def once_call(self, token: str = "") -> str:
        """Guard of one call's interaction batch (``token``: random per call; "" gives the common head)."""
        return f"{self.prefix}once:call:{{{token}}}" if token else f"{self.prefix}once:call:"

    def once_in_slot(self, slot_tag: str, idempotency_key: str | None, token: str = "") -> str:
        """Guard of the part of an interaction batch that one slot holds (Redis Cluster): the slot is the
        one of ``{slot_tag}`` (an already-escaped tag); the name carries the client key or the call token."""
        if idempotency_key is not None:
            return f"{self.prefix}once:{{{slot_tag}}}:key:{idempotency_key}"
        return f"{self.prefix}once:{{{slot_tag}}}:call:{token}"

    def impression_bucket(self, recommendation_id: str) -> str:
        """The hash that holds one answer for attribution: by the 10 s window of the time in its id (a
        recommender.online recommendation id: 12 hex characters of milliseconds first) and one of
        IMPRESSION_SHARDS shards (a CRC32 of the id; the shard is the hash tag, so on a cluster the attribution
        hashes live in 8 slots, spread over the masters by partition_tags), so one writer's batch is a few
        HSETs, not a command per answer, and no hash grows large (one expiring is freed at once). The hash
        expires at an absolute time computed from the id (EXPIREAT): the app's and Redis's clocks should agree
        (NTP); an answer flushed later than IMPRESSION_TTL after it was given is not attributable."""
        shard = zlib.crc32(recommendation_id.encode()) % IMPRESSION_SHARDS
        return f"{self.prefix}imp:{{{partition_tags(IMPRESSION_SHARDS)[shard]}}}:{impression_window(recommendation_id)}"

    def impression(self, recommendation_id: str) -> str:
        """One answer as shown, for attribution, as written before 0.7 (read during an upgrade)."""
        return f"{self.prefix}imp:{{{recommendation_id}}}"

    def impression_click(self, recommendation_id: str, position: int) -> str:
        """The claim that one slot of an answer in the pre-0.7 layout was attributed a click (same slot)."""
        return f"{self.prefix}imp:{{{recommendation_id}}}:click:{position}"

    def stats(self, hour: int, shard: int) -> str:
        """Counters of the impressions shown in one hour (hours since the epoch), one of a few shards (no tag:
        the whole name is hashed, so the shards of an hour spread over a cluster)."""
        return f"{self.prefix}stats:{hour}:{shard}"

    def model_pointer(self, variant: str | None = None) -> str:
        """The published version of an A/B variant; the one model's pointer when None."""
        return self.model_current if variant is None else f"{self.prefix}model:variant:{variant}"

    def job(self, job_id: str) -> str:
        """Hash of one retrain job (same slot as the queue: queued in one MULTI)."""
        return f"{self.prefix}{{retrain}}:job:{job_id}"

    # ------------------------------------------------------------------ parsing and matching

    def users_of(self, key: str) -> list[str]:
        """The user id a per-user key belongs to, as a list ([] for any other key).

        An escaped id holds no ``}``, so the ``}`` before the suffix ends it: a key has one reading.
        """
        if not key.startswith(self.user_prefix + "{"):
            return []
        rest = key[len(self.user_prefix) + 1:]
        for suffix in USER_SUFFIXES:
            end = "}" + suffix
            if rest.endswith(end) and "}" not in rest[:-len(end)]:
                return [untag(rest[:-len(end)])]
        return []

    def feature_pattern(self, kind: str) -> str:
        """SCAN MATCH pattern of every feature hash of ``kind`` ("user" or "item"), prefix escaped."""
        return glob_escape(self._head(kind) + "{") + "*" + glob_escape("}" + FEATURES)

    def entity_of_feature_key(self, kind: str, key: str) -> str:
        """The id inside a feature-hash key of ``kind``."""
        return untag(key[len(self._head(kind)) + 1:-len(FEATURES) - 1])

    def all_pattern(self) -> str:
        """SCAN MATCH pattern of every key under the prefix."""
        return glob_escape(self.prefix) + "*"

    def _head(self, kind: str) -> str:
        if kind not in ("user", "item"):
            raise ValueError(f"kind must be 'user' or 'item', got {kind!r}")
        return self.user_prefix if kind == "user" else self.item_prefix


class LegacyKeys:
    """The key names of version 0.6 (untagged, one stream), for moving such a store (recommender.store.migrate).

    Per-user keys were ``<prefix>user:<id><suffix>`` (with a ``:log`` list), items ``<prefix>item:<id>:features``.
    """

    LOG = ":log"

    def __init__(self, prefix: str = "reco:"):
        self.prefix = prefix
        self.interactions = prefix + "interactions"
        self.users = prefix + "users"
        self.items = prefix + "items"
        self.items_changed = prefix + "items:changed"
        self.retrain_queue = prefix + "retrain:queue"
        self.retrain_active = prefix + "retrain:active"
        self.retrain_lock = prefix + "retrain:lock"
        self.user_head = prefix + "user:"
        self.item_head = prefix + "item:"
        self.job_head = prefix + "job:"
        self.once_key_head = prefix + "once:key:"

    def store_wide(self) -> list[str]:
        """The keys whose presence tells a store of the old layout (one of them exists in any such store)."""
        return [self.interactions, self.users, self.items, self.items_changed, self.retrain_queue,
                self.retrain_active, self.retrain_lock]

    def user_key(self, user_id: str, suffix: str) -> str:
        """An old per-user key."""
        return f"{self.user_head}{user_id}{suffix}"

    def parse_user_key(self, key: str) -> tuple[str, str] | None:
        """(user id, suffix) of an old per-user key (its ``:log`` list included); None for anything else (a
        key of the tagged layout, say). A key ends with exactly one suffix, so the reading is unique."""
        if not key.startswith(self.user_head):
            return None
        rest = key[len(self.user_head):]
        for suffix in USER_SUFFIXES + (self.LOG,):
            if rest.endswith(suffix):
                user = rest[:-len(suffix)]
                if user.startswith("{") and user.endswith("}"):
                    return None  # tagged: reco:user:{id}:seen
                return user, suffix
        return None

    def parse_item_key(self, key: str) -> str | None:
        """The item id of an old item feature key; None for anything else."""
        if not (key.startswith(self.item_head) and key.endswith(FEATURES)):
            return None
        item = key[len(self.item_head):-len(FEATURES)]
        return None if item.startswith("{") and item.endswith("}") else item

    def patterns(self) -> dict[str, str]:
        """SCAN MATCH patterns of the old per-entity, job and guard keys."""
        return {"user": glob_escape(self.user_head) + "*", "item": glob_escape(self.item_head) + "*",
                "job": glob_escape(self.job_head) + "*", "once": glob_escape(self.once_key_head) + "*"}


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so that ``text`` matches itself literally in SCAN MATCH."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)
