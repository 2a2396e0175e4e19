"""Key names: one module builds them and parses them back (recommender.store.keys)."""

from __future__ import annotations

from collections import Counter

import pytest

from recommender.store.keys import PARTITIONS, SLOTS, Keys, Partitioned, glob_escape, partition_tags, slot_of, tag, untag

AWKWARD_IDS = ["u1", "u:1", "a:b:seen", "x:features", "}", "}x", "{", "{a}", "a}b", "%7D", "%25", "100%", "{}", "é"]


@pytest.mark.parametrize("user", AWKWARD_IDS)
def test_every_key_a_request_reads_shares_one_slot_and_parses_back(user):
    keys = Keys("reco:")
    slots = {slot_of(k) for k in keys.user_keys(user)}
    assert len(slots) == 1, (user, keys.user_keys(user))
    for key in keys.user_keys(user):
        assert key.startswith(keys.user_prefix)  # what the user cache tracks
        assert keys.users_of(key) == [user]
    # the log list and the users-set part live with the user's log partition (one script erases them)
    assert slot_of(keys.user_log(user)) == slot_of(keys.log_partition(user)) == slot_of(keys.users_part(user))
    assert untag(tag(user)) == user and "}" not in tag(user)


def test_the_tagged_layout_is_the_documented_one():
    keys = Keys("reco:")
    assert keys.user_features("u42") == "reco:user:{u42}:features"
    assert keys.user_seen("a}b") == "reco:user:{a%7Db}:seen"
    assert keys.item_features("i:1") == "reco:item:{i:1}:features"
    # golden values: the partition of an id must never change (erasure finds a user's entries through it)
    assert keys.log_partition("u42") == "reco:interactions:{11.43}"
    assert keys.user_log("u42") == "reco:interactions:{11.43}:log:u42"
    assert keys.users_part("u42") == "reco:users:{11.43}"
    assert partition_tags(16)[:3] == ("0.13", "1.10", "2.3")
    assert keys.users_of(keys.item_features("i1")) == [] and keys.users_of(keys.users.keys[0]) == []
    assert keys.users_of("reco:user:x:features") == []  # the untagged layout of version 0.6 is not this one
    assert slot_of(keys.items) == slot_of(keys.items_changed)  # removed and marked changed in one MULTI
    assert len({slot_of(k) for k in (keys.retrain_queue, keys.job("j1"), keys.retrain_active,
                                     keys.retrain_lock)}) == 1


def test_partitions_spread_evenly_over_the_slot_space_and_users_over_partitions():
    parts = Partitioned("reco:interactions")
    assert len(parts) == PARTITIONS == 16
    for p, key in enumerate(parts.keys):
        assert p * SLOTS // 16 <= slot_of(key) < (p + 1) * SLOTS // 16
    # three masters with the slot ranges redis-cli gives them: 5, 6 and 5 partitions
    ranges = [(0, 5460), (5461, 10922), (10923, 16383)]
    per_master = Counter(next(m for m, (lo, hi) in enumerate(ranges) if lo <= slot_of(k) <= hi) for k in parts)
    assert sorted(per_master.values()) == [5, 5, 6]
    users = Counter(parts.part_of(f"u{k}") for k in range(16_000))
    assert len(users) == 16 and max(users.values()) < 1.15 * min(users.values())
    # an entity's part holds the slot of its own keys: on a range-split cluster, the same master
    for user in ("u1", "u2", "someone"):
        p = parts.part_of(user)
        assert p * SLOTS // 16 <= slot_of(Keys().user_seen(user)) < (p + 1) * SLOTS // 16
    with pytest.raises(ValueError):
        partition_tags(0)


def test_feature_key_pattern_escapes_the_prefix_and_recovers_ids():
    keys = Keys("t[1]*:")
    assert keys.feature_pattern("item") == r"t\[1\]\*:item:{*}:features"
    for item in AWKWARD_IDS:
        assert keys.entity_of_feature_key("item", keys.item_features(item)) == item
    assert glob_escape("a?b\\") == "a\\?b\\\\"
    with pytest.raises(ValueError):
        keys.feature_pattern("job")
