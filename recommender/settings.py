"""Typed settings: defaults, then the environment, then validation, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Mapping

from .features import MAX_WEIGHT, ROW_NORMS
from .model.artifact_store import parse_store_url
from .model.foldin import ITEM_ITEM_KINDS
from .model.lightfm_model import INDICATORS, LOSSES
from .store.connection import is_cluster_url, parse_cluster_url

#: settings an A/B variant may override (training and per-request serving ones)
VARIANT_SETTINGS = ("LOSS", "NO_COMPONENTS", "EPOCHS", "LEARNING_RATE", "INDICATORS", "ROW_NORM", "RANDOM_STATE",
                    "TRAIN_BUDGET_SECONDS", "BLENDS", "ITEM_ITEM", "FOLD_IN", "EXPLORATION_RATE")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def parse_bool(value: str) -> bool:
    """"1", "true", "yes", "on" (any case) -> True; "0", "false", "no", "off" -> False; else ValueError.

    The one boolean grammar of the project: environment variables and query parameters alike.
    """
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(f"not a boolean (true/false, 1/0, yes/no, on/off): {value!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the service and the trainer read from the environment (names in ENV)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "reco:"
    redis_timeout: float = 0.25  # seconds per Redis call on the request path; then degrade
    redis_breaker_seconds: float = 1.0  # after a failed request-path read, degrade at once this long; 0 = off
    model_dir: str = "var/models"  # the store of versions; with MODEL_STORE, the local cache of downloaded ones
    model_store: str | None = None  # s3://bucket/prefix: publish to an S3-compatible object store
    model_retention: int = 0  # versions kept when pruning after a publish (store and caches); 0 = keep all
    admin_token: str | None = None
    max_n: int = 100
    default_n: int = 10
    max_candidates: int = 1000  # longest accepted ?items= list
    max_body_bytes: int = 1_000_000
    max_interactions_per_request: int = 10_000
    max_interactions: int = 0  # keep about this many newest interactions in the log (0 = all): a sliding window
    max_weight: float = MAX_WEIGHT  # |weight| bound for interactions and features; larger ones are refused (400)
    idempotency_ttl: int = 86_400  # seconds a POST /interactions Idempotency-Key is remembered (~150 B each)
    watch_interval: float = 1.0  # seconds between checks for a new model version and item changes
    user_cache_size: int = 10_000  # users per process whose records are cached (Redis-invalidated); 0 = off
    user_cache_ttl: float = 300.0  # backstop only: invalidations keep entries current (redis-py's own cache has no TTL)
    result_cache: bool = True  # keep each cached user's ranking with its user-cache entry (dropped with it)
    trainer_in_app: bool = False  # run the trainer loop as a thread of every app process
    fold_in: bool = True  # use interactions the model did not train on at request time (method: the model's)
    blends: bool = True  # let the trainer blend co-occurrence and popularity with LightFM where validation says so
    item_item: str = "auto"  # the item-item rankers the selection may blend: auto (cosine and ridge), cosine, ridge
    exploration_rate: float = 0.0  # share of answer slots given to a random eligible item (0: off)
    impressions_max: int = 1_000_000  # about this many newest impressions (and attributions) are kept
    impression_ttl: int = 3600  # seconds an answer can still be attributed an interaction (memory: see README)
    variants: str = ""  # A/B variants, JSON: name -> {"share": s, "settings": {"ENV_NAME": value}}; "" = none
    max_session_items: int = 100  # longest "recent" list of POST /recommend
    # training
    loss: str = "warp"
    no_components: int = 32
    epochs: str = "auto"  # "auto": early stopping on validation precision at every retrain; or a fixed number
    learning_rate: float = 0.05
    indicators: str = "both"
    row_norm: str = "auto"  # "auto": chosen by validation at every retrain among features, together, none
    train_budget_seconds: float = 300.0  # time the trainer's selection may take (configuration and policy)
    train_threads: int = 1
    random_state: int | None = 42
    eval_k: int = 10
    eval_tolerance: float = 0.02  # publish unless precision@k drops by more than this (absolute)
    eval_beat_baseline: bool = True  # ... and unless it falls below popularity on the same held-out data
    retrain_lock_ttl: int = 600  # seconds; a crashed trainer's lock expires after this
    item_cache_size: int = 100_000
    ann_index: bool = False  # build an approximate top-k index (faiss HNSW) with each model ...
    ann_min_items: int = 200_000  # ... when it has at least this many items (exact is fast enough below)
    ann_ef_search: int = 64  # starting search breadth; the trainer widens it until ANN_TARGET_RECALL is measured
    ann_target_recall: float = 0.9  # recall@10 vs exact, measured on 200 users at publish; 0 = keep ANN_EF_SEARCH

    ENV = {
        "redis_url": "REDIS_URL", "redis_prefix": "REDIS_PREFIX", "redis_timeout": "REDIS_TIMEOUT",
        "redis_breaker_seconds": "REDIS_BREAKER_SECONDS",
        "model_dir": "MODEL_DIR", "model_store": "MODEL_STORE", "model_retention": "MODEL_RETENTION",
        "admin_token": "ADMIN_TOKEN", "max_n": "MAX_N", "default_n": "DEFAULT_N",
        "max_candidates": "MAX_CANDIDATES", "max_body_bytes": "MAX_BODY_BYTES",
        "max_interactions_per_request": "MAX_INTERACTIONS_PER_REQUEST", "max_weight": "MAX_WEIGHT",
        "idempotency_ttl": "IDEMPOTENCY_TTL", "max_interactions": "MAX_INTERACTIONS",
        "watch_interval": "WATCH_INTERVAL",
        "user_cache_size": "USER_CACHE_SIZE", "user_cache_ttl": "USER_CACHE_TTL",
        "result_cache": "RESULT_CACHE",
        "trainer_in_app": "TRAINER_IN_APP", "fold_in": "FOLD_IN", "blends": "BLENDS", "item_item": "ITEM_ITEM",
        "exploration_rate": "EXPLORATION_RATE", "impressions_max": "IMPRESSIONS_MAX",
        "impression_ttl": "IMPRESSION_TTL", "variants": "VARIANTS",
        "max_session_items": "MAX_SESSION_ITEMS", "loss": "LOSS", "no_components": "NO_COMPONENTS", "epochs": "EPOCHS",
        "learning_rate": "LEARNING_RATE", "indicators": "INDICATORS", "row_norm": "ROW_NORM",
        "train_budget_seconds": "TRAIN_BUDGET_SECONDS",
        "train_threads": "TRAIN_THREADS", "random_state": "RANDOM_STATE", "eval_k": "EVAL_K",
        "eval_tolerance": "EVAL_TOLERANCE",
        "eval_beat_baseline": "EVAL_BEAT_BASELINE", "retrain_lock_ttl": "RETRAIN_LOCK_TTL",
        "item_cache_size": "ITEM_CACHE_SIZE", "ann_index": "ANN_INDEX", "ann_min_items": "ANN_MIN_ITEMS",
        "ann_ef_search": "ANN_EF_SEARCH",
        "ann_target_recall": "ANN_TARGET_RECALL",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from environment variables (unset ones keep their defaults), then validate."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in cls.ENV.items():
            raw = environ.get(var)
            if raw is None or (raw == "" and name != "admin_token"):
                continue
            values[name] = _convert(name, types[name], raw, var)
        values.update(overrides)
        if values.get("admin_token") == "":
            values["admin_token"] = None
        return cls(**values).validated()

    def validated(self) -> "Settings":
        """Return self, or raise ValueError naming the setting that is out of range."""
        problems = []
        if is_cluster_url(self.redis_url):
            try:
                parse_cluster_url(self.redis_url)
            except ValueError as exc:
                problems.append(f"REDIS_URL: {exc}")
        elif not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("REDIS_URL must start with redis://, rediss:// or unix:// (one server) or "
                            "redis+cluster://host:port[,host:port...] (a Redis Cluster)")
        if self.model_store is not None:
            try:
                parse_store_url(self.model_store)
            except ValueError:
                problems.append("MODEL_STORE must be s3://bucket or s3://bucket/prefix (unset: MODEL_DIR is the store)")
        if self.model_retention < 0:
            problems.append("MODEL_RETENTION must be >= 0 (0 keeps every version)")
        if not (1 <= self.default_n <= self.max_n <= 10_000):
            problems.append("need 1 <= DEFAULT_N <= MAX_N <= 10000")
        if not 0 <= self.exploration_rate <= 1:
            problems.append("EXPLORATION_RATE must be in [0, 1]")
        if self.impressions_max < 0 or self.impression_ttl < 1:
            problems.append("IMPRESSIONS_MAX must be >= 0 and IMPRESSION_TTL >= 1")
        if self.variants:
            try:
                self.variant_list
            except ValueError as exc:
                problems.append(str(exc))
        if self.max_session_items < 1:
            problems.append("MAX_SESSION_ITEMS must be >= 1")
        if self.max_candidates < 1 or self.max_body_bytes < 1024:
            problems.append("MAX_CANDIDATES must be >= 1 and MAX_BODY_BYTES >= 1024")
        if self.redis_breaker_seconds < 0:
            problems.append("REDIS_BREAKER_SECONDS must be >= 0 (0 turns the breaker off)")
        if self.idempotency_ttl < 1:
            problems.append("IDEMPOTENCY_TTL must be >= 1 second")
        if self.max_interactions < 0:
            problems.append("MAX_INTERACTIONS must be >= 0 (0 keeps every interaction)")
        if self.redis_timeout <= 0 or self.watch_interval <= 0:
            problems.append("REDIS_TIMEOUT and WATCH_INTERVAL must be > 0")
        if self.user_cache_size < 0 or self.user_cache_ttl <= 0:
            problems.append("USER_CACHE_SIZE must be >= 0 and USER_CACHE_TTL > 0")
        if self.loss not in LOSSES:
            problems.append(f"LOSS must be one of {', '.join(LOSSES)}")
        if self.indicators not in [str(i).lower() for i in INDICATORS]:
            problems.append("INDICATORS must be both, users, items or false")
        if self.row_norm != "auto" and self.row_norm not in ROW_NORMS:
            problems.append(f"ROW_NORM must be auto or one of {ROW_NORMS}")
        if self.item_item not in ("auto", *ITEM_ITEM_KINDS):
            problems.append("ITEM_ITEM must be auto, cosine or ridge")
        if self.epochs != "auto" and not (str(self.epochs).isdigit() and int(self.epochs) >= 1):
            problems.append("EPOCHS must be auto or an integer >= 1")
        if self.no_components < 1 or self.train_threads < 1:
            problems.append("NO_COMPONENTS and TRAIN_THREADS must be >= 1")
        if not self.train_budget_seconds > 0:
            problems.append("TRAIN_BUDGET_SECONDS must be > 0")
        if not self.learning_rate > 0 or not self.max_weight > 0:
            problems.append("LEARNING_RATE and MAX_WEIGHT must be > 0")
        if self.ann_index and not _importable("faiss"):
            problems.append("ANN_INDEX=true needs faiss (pip install faiss-cpu); it is not installed here")
        if not 0 <= self.ann_target_recall <= 1 or self.ann_ef_search < 1:
            problems.append("ANN_TARGET_RECALL must be in [0, 1] and ANN_EF_SEARCH >= 1")
        if self.retrain_lock_ttl < 10:
            problems.append("RETRAIN_LOCK_TTL must be >= 10 seconds")
        if self.admin_token is not None and 0 < len(self.admin_token) < 16:
            problems.append("ADMIN_TOKEN must be at least 16 characters (or unset to disable admin endpoints)")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))
        return self

    def with_(self, **changes) -> "Settings":
        """A copy with some values changed (validated)."""
        return replace(self, **changes).validated()

    def to_env(self) -> dict[str, str]:
        """Every setting that has a value, as the environment variables that reproduce it."""
        env = {}
        for name, var in self.ENV.items():
            value = getattr(self, name)
            if value is not None:
                env[var] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    @property
    def variant_list(self) -> list:
        """The A/B variants (recommender.online.Variant); one "default" variant without VARIANTS.

        Raises
        ------
        ValueError
            VARIANTS is malformed (see recommender.online.parse_variants).
        """
        from .online import DEFAULT_VARIANT, Variant, parse_variants

        if not self.variants:
            return [Variant(DEFAULT_VARIANT, 1.0, {})]
        return parse_variants(self.variants, VARIANT_SETTINGS)

    def for_variant(self, variant) -> "Settings":
        """These settings with a variant's overrides applied (validated)."""
        if not variant.overrides:
            return self
        return Settings.from_env({**self.to_env(), **variant.overrides})

    @property
    def fixed_epochs(self) -> int | None:
        """EPOCHS as a number, or None for "auto"."""
        return None if self.epochs == "auto" else int(self.epochs)

    @property
    def row_norms(self) -> tuple[str, ...]:
        """The row_norm candidates of the trainer's selection: all for "auto", else the one fixed."""
        from .selection import ROW_NORM_CANDIDATES

        return ROW_NORM_CANDIDATES if self.row_norm == "auto" else (self.row_norm,)

    def model_params(self) -> dict:
        """Keyword arguments for LFMRecommender from these settings, row_norm excepted (the trainer chooses it)."""
        return {"indicators": False if self.indicators == "false" else self.indicators,
                "loss": self.loss, "no_components": self.no_components, "learning_rate": self.learning_rate,
                "random_state": self.random_state, "cache_size": self.item_cache_size}


def _importable(module: str) -> bool:
    """True when ``module`` can be imported here (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _convert(name: str, type_name, raw: str, var: str):
    """Convert one environment string to the field's type, naming the variable on failure."""
    type_name = str(type_name)
    try:
        if type_name.startswith("bool"):
            return parse_bool(raw)
        if type_name.startswith("int"):
            return None if raw.lower() == "none" and "None" in type_name else int(raw)
        if type_name.startswith("float"):
            return float(raw)
        if "None" in type_name and raw == "":
            return None
        return raw
    except ValueError:
        raise ValueError(f"invalid settings: {var}={raw!r} is not a valid {type_name}") from None

