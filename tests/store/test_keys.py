"""Key names: one module builds them and parses them back (recommender.store.keys)."""

from __future__ import annotations

import pytest

from recommender.store.keys import Keys, glob_escape


def test_per_user_keys_parse_back_to_their_user_even_with_colons_and_suffix_like_ids():
    keys = Keys("reco:")
    assert keys.users_of(keys.user_features("u:1")) == ["u:1"]
    assert keys.users_of(keys.user_seen("a:b:seen")) == ["a:b:seen"]
    # an id that itself ends like a suffix: both readings are returned (dropping one cache entry too many is safe)
    assert sorted(keys.users_of("reco:user:x:seen:features")) == ["x:seen"]
    assert sorted(keys.users_of("reco:user:x:features:seen")) == ["x:features"]
    assert keys.users_of(keys.item_features("i1")) == [] and keys.users_of(keys.users) == []


def test_feature_key_pattern_escapes_the_prefix_and_recovers_ids():
    keys = Keys("t[1]*:")
    assert keys.feature_pattern("item") == r"t\[1\]\*:item:*:features"
    assert keys.entity_of_feature_key("item", keys.item_features("a:b")) == "a:b"
    assert glob_escape("a?b\\") == "a\\?b\\\\"
    with pytest.raises(ValueError):
        keys.feature_pattern("job")
