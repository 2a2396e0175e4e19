"""The Redis side: keys, connections, features, interactions, bulk loads, the training snapshot, jobs.

=================== ==========================================================================
module              owns
=================== ==========================================================================
``keys``            every key name (and parsing them back); the layout table
``connection``      the pool, the request path's per-thread connection, wrapping Redis errors
``feature_store``   ``RedisFeatureStore``: entity writes, request-path reads, the facade
``validation``      checks of records, frames and idempotency keys; parsing stored weights
``interactions``    the interaction log's exactly-once write (one Lua script call per batch)
``bulk``            bulk loads of frames
``snapshot``        the training snapshot (log + feature hashes as frames)
``jobs``            retrain jobs, the single-flight lock, the model pointer
``usercache``       per-process cache of user records, invalidated by Redis (CLIENT TRACKING)
``breaker``         circuit breaker on the request path's read
=================== ==========================================================================
"""

from .feature_store import RedisFeatureStore, UserRecord
from .interactions import WriteResult
from .keys import Keys
from .snapshot import Snapshot

__all__ = ["RedisFeatureStore", "Snapshot", "UserRecord", "WriteResult", "Keys"]
