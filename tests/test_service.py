"""RecommendationService in process: the degrade policy, absent features, input rules (real Redis)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from recommender.errors import InvalidInputError, NoModelError, NotFoundError, StoreUnavailableError
from recommender.model import LFMRecommender
from recommender.serving import ModelHolder, ModelSnapshot
from recommender.service import RecommendationService
from tests.helpers import seed_store, service_settings, small_world


class RedisDown:
    """The request path's user reads while Redis is down (the failure is the input, not under test)."""

    def get_user(self, user_id):
        raise StoreUnavailableError("Redis is down (simulated)")


@pytest.fixture(scope="module")
def world():
    return small_world()


@pytest.fixture(scope="module")
def model(world):
    return LFMRecommender(no_components=8, random_state=0).fit(world.interactions, world.user_features,
                                                              world.item_features, epochs=3)


@pytest.fixture
def service(redis_url, key_prefix, tmp_path, world, model):
    store = seed_store(redis_url, key_prefix, world)
    holder = ModelHolder()
    holder.swap(ModelSnapshot(model, "v-test", time.time(), {}, model.prepare_items({}), {}))
    return RecommendationService(service_settings(redis_url, key_prefix, tmp_path), store, store, holder,
                                 watcher=None)


def test_known_user_with_features_in_redis_and_seen_items_excluded(service, world, model):
    user = world.interactions["user_id"].iloc[0]
    features, seen, _ = service.store.get_user(user)
    answer = service.recommend(user, 7)
    assert (answer.strategy, answer.degraded, answer.model_version) == ("personalized", False, "v-test")
    assert answer.items == model.recommend(user, 7, user_features=features, exclude=seen)
    assert not {i for i, _ in answer.items} & seen


def test_redis_down_degrades_to_the_model_alone(service, world, model):
    user = world.interactions["user_id"].iloc[0]
    service.users = RedisDown()
    answer = service.recommend(user, 5)
    assert answer.degraded is True and answer.strategy == "personalized"
    assert answer.items == model.recommend(user, 5)  # training-time features, nothing excluded
    assert service.recommend("nobody-knows", 5).strategy == "popular"


def test_absent_features_mean_training_time_features_and_empty_ones_the_indicator_alone(service, world, model):
    user = world.interactions["user_id"].iloc[0]
    service.store.client.delete(service.store.keys.user_features(user))  # never written (or erased): absent
    _, seen, _ = service.store.get_user(user)
    assert service.recommend(user, 5).items == model.recommend(user, 5, exclude=seen)
    service.store.set_user_features(user, {})  # set to nothing: the indicator alone
    assert service.recommend(user, 5).items == model.recommend(user, 5, user_features={}, exclude=seen)
    assert model.recommend(user, 5, user_features={}, exclude=seen) != model.recommend(user, 5, exclude=seen)


def test_negative_items_are_never_recommended_back_even_without_seen_exclusion(service, world, model):
    user = world.interactions["user_id"].iloc[0]
    top = [i for i, _ in service.recommend(user, 3, exclude_seen=False).items]
    service.store.add_interactions([{"user_id": user, "item_id": top[0], "weight": -1.0},
                                    {"user_id": user, "item_id": top[1], "weight": 0.0}])
    again = [i for i, _ in service.recommend(user, 3, exclude_seen=False).items]
    assert top[0] not in again and top[1] not in again and again[0] == top[2]


@pytest.mark.parametrize("call, code", [
    (lambda s: s.recommend("u1", 0), "invalid_parameter"),
    (lambda s: s.recommend("u1", 10_000), "invalid_parameter"),
    (lambda s: s.recommend("", 5), "invalid_id"),
    (lambda s: s.recommend("x" * 300, 5), "invalid_id"),
    (lambda s: s.recommend("u1", 5, items=[]), "invalid_parameter"),
    (lambda s: s.recommend("u1", 5, items=["i1"] * 5000), "invalid_parameter"),
    (lambda s: s.set_item_features("i1", {"genre:drama": "heavy"}), "invalid_body"),
    (lambda s: s.set_user_features("u1", {f"f{k}": 1.0 for k in range(1001)}), "invalid_body"),
    (lambda s: s.add_interactions([{"user_id": "u1", "item_id": "i1", "weight": "x"}]), "invalid_body"),
    (lambda s: s.add_interactions([{"user_id": "u1", "item_id": "i1"}], "bad key"), "invalid_header"),
    (lambda s: s.retrain_job("j" * 65), "invalid_id"),
])
def test_bad_input_is_an_invalid_input_error_with_its_code_and_writes_nothing(service, call, code):
    before = service.store.counts()
    with pytest.raises(InvalidInputError) as raised:
        call(service)
    assert raised.value.code == code
    assert service.store.counts() == before


def test_unknown_job_and_no_model_are_domain_errors(service):
    with pytest.raises(NotFoundError) as raised:
        service.retrain_job("no-such-job")
    assert raised.value.code == "unknown_job"
    service.holder = ModelHolder()
    with pytest.raises(NoModelError):
        service.recommend("u1", 5)
    with pytest.raises(NoModelError):
        service.model_info()


def test_stop_writes_the_impressions_first_and_does_not_wait_for_a_running_retrain(service, model):
    """gunicorn kills a worker still alive after its graceful timeout (10 s): stop() must be done sooner, and
    what it must not lose (the buffered impressions) is written before anything else is waited for."""
    import threading

    from recommender.online import ImpressionWriter
    from recommender.store.impressions import ImpressionLog
    from recommender.training import Trainer

    writer = ImpressionWriter(ImpressionLog(service.store, 1000, 60), interval=60, batch=1000, capacity=1000)
    writer.start()
    service.impressions = writer
    for n in range(3):
        service.recommend(model.uid_map.index[n], 5)
    trainer = Trainer(service.store, service.settings)
    release = threading.Event()
    trainer._thread = threading.Thread(target=release.wait, args=(30,), daemon=True)  # a job that runs on
    trainer._thread.start()
    service.trainer = trainer
    started = time.monotonic()
    service.stop(timeout=1.0)
    took = time.monotonic() - started
    release.set()
    assert took < 3.0, took
    assert len(list(service.impression_log.read())) == 3


@pytest.fixture
def cached(service):
    """The service behind a live, Redis-invalidated user cache, counting RESULT_CACHE lookups."""
    from recommender.service import Hooks
    from recommender.store.usercache import UserCache

    lookups: list[str] = []
    service.users = UserCache(service.store, maxsize=100, ttl=60).start()
    assert service.users.wait_live(5), "tracking was not established"
    service.hooks = Hooks(on_result_cache=lookups.append)
    yield service, lookups
    service.users.stop()


def test_a_repeated_request_is_answered_from_the_users_cache_entry_as_computed(cached, world, model):
    service, lookups = cached
    users = list(world.interactions["user_id"].drop_duplicates()[:20]) + ["nobody-knows"]
    first = [service.recommend(u, 7) for u in users]
    second = [service.recommend(u, 7) for u in users]
    assert lookups == ["miss"] * len(users) + ["hit"] * len(users)
    assert [a.items for a in second] == [a.items for a in first]
    assert [a.strategy for a in second] == [a.strategy for a in first]
    assert len({a.recommendation_id for a in first + second}) == 2 * len(users)  # each answer its own id
    for user, answer in zip(users[:20], second):  # independent reference: the library on the store's record
        features, seen, _ = service.store.get_user(user)
        assert answer.items == model.recommend(user, 7, user_features=features, exclude=seen)
    service.settings = service.lanes[0].settings = replace(service.settings, result_cache=False)
    lookups.clear()
    assert [service.recommend(u, 7).items for u in users] == [a.items for a in first]
    assert lookups == []  # RESULT_CACHE=false: computed every time


def test_a_write_to_the_user_drops_its_kept_ranking_before_the_next_request(cached, world):
    service, lookups = cached
    user = world.interactions["user_id"].iloc[0]
    top = [i for i, _ in service.recommend(user, 5).items]
    assert [i for i, _ in service.recommend(user, 5).items] == top and lookups == ["miss", "hit"]
    service.add_interactions([{"user_id": user, "item_id": top[0], "weight": 1.0}])
    after = [i for i, _ in service.recommend(user, 5).items]
    assert lookups[-1] == "miss" and top[0] not in after and after[:4] == top[1:]
    service.set_user_features(user, {})  # a feature write drops it too
    service.recommend(user, 5)
    assert lookups[-1] == "miss"


def test_options_exploration_and_a_new_snapshot_are_never_served_a_kept_ranking(cached, world, model):
    service, lookups = cached
    user = world.interactions["user_id"].iloc[0]
    top = [i for i, _ in service.recommend(user, 5).items]
    assert [i for i, _ in service.recommend(user, 5, exclude=[top[0]]).items] == top[1:] + \
        [i for i, _ in service.recommend(user, 6).items][5:]
    assert [i for i, _ in service.recommend(user, 5, items=top[::-1]).items] == top
    features = world.item_features.groupby("item_id")["feature"].apply(set)
    genre = sorted(features[top[1]])[0]
    filtered = service.recommend(user, 5, filters=[[genre]]).items
    assert filtered and all(genre in features[i] for i, _ in filtered)
    assert lookups == ["miss", "miss"]  # n=5, then n=6; the restricted answers never looked
    service.recommend(user, 5, exclude_seen=False)
    service.recommend(user, 5)
    assert lookups[-2:] == ["miss", "hit"]
    service.holder.swap(ModelSnapshot(model, "v-test", time.time(), {}, model.prepare_items({}), {}))  # a refresh
    service.recommend(user, 5)
    assert lookups[-1] == "miss"
    for n in range(1, 10):  # an entry keeps at most RESULT_CACHE_KEYS rankings, each only the user's answer
        service.recommend(user, n)
    from recommender.service import RESULT_CACHE_KEYS
    memo = service.users.get_user(user).memo
    assert 1 <= len(memo) <= RESULT_CACHE_KEYS and (service.lanes[0].variant.name, service.holder.snapshot.serial,
                                                     9, True) in memo
    assert all(len(kept[0]) == key[2] and all(isinstance(i, str) for i, _ in kept[0]) for key, kept in memo.items())
    exploring = replace(service.settings, exploration_rate=0.5)
    service.lanes[0].settings = exploring
    lookups.clear()
    service.recommend(user, 5)
    service.recommend(user, 5)
    assert lookups == []


def test_a_catalogue_change_the_watcher_applies_is_never_answered_from_a_kept_ranking(cached, model):
    """Deleting an item writes nothing of the user's (its cache entry stays): only the snapshot the watcher
    swaps in, with its own serial, keeps the kept ranking from answering the deleted item."""
    from recommender.serving import ModelWatcher, build_snapshot

    service, lookups = cached
    service.holder.swap(build_snapshot(service.store, model, "v-test"))
    watcher = ModelWatcher(service.holder, service.store, service.settings.model_dir, 60)
    user = model.uid_map.index[0]
    top = [i for i, _ in service.recommend(user, 5).items]
    assert [i for i, _ in service.recommend(user, 5).items] == top and lookups == ["miss", "hit"]
    assert service.delete_item(top[0])["removed"]
    watcher.check_once()
    after = [i for i, _ in service.recommend(user, 5).items]
    assert lookups[-1] == "miss" and top[0] not in after and after[:4] == top[1:]
    service.recommend(user, 5)
    memo = service.users.get_user(user).memo
    assert lookups[-1] == "hit" and {key[1] for key in memo} == {service.holder.snapshot.serial}  # the dead one went
