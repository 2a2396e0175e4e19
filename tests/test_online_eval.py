"""Offline evaluation on the exploration slice: replay is unbiased where the naive estimate is not; the log
reads back into slots; ``reco-online-eval`` end to end (real Redis, a published model, the service's answers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recommender.online import ImpressionWriter, new_recommendation_id
from recommender.online_eval import (Estimate, Slot, compare, exclusions, logged_click_precision, read_slots, replay,
                                     replay_slots)
from recommender.service import RecommendationService
from recommender.serving import ModelHolder, build_snapshot, load_checked
from recommender.store.impressions import Impression, ImpressionLog
from tests.helpers import both_redis_url, publish_first_model, seed_store, service_settings, small_world

redis_url = both_redis_url()  # the log read back and replayed on a single Redis and on a cluster


def test_wilson_interval():
    e = Estimate.of("x", 5, 100)
    assert e.ctr == 0.05 and e.low < 0.05 < e.high and e.stderr == pytest.approx((0.05 * 0.95 / 100) ** 0.5)
    assert 0.02 < e.low < 0.025 and 0.11 < e.high < 0.115  # Wilson 95%: [0.0215, 0.1118]
    assert Estimate.of("x", 0, 0).ctr is None and Estimate.of("x", 0, 10).low == 0.0


def simulated_log(seed: int = 1, users: int = 60, items: int = 120, answers: int = 40_000, k: int = 5,
                  rate: float = 0.3):
    """A logger that shows its own biased top-k (popularity-like), with explored slots drawn uniformly from
    every item at uniformly random positions; clicks ~ examine(position) * p[user, item]."""
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 8.0, size=(users, items))  # true click chance when examined
    popularity = rng.normal(size=items) * 2
    logger_score = popularity[None, :] + rng.normal(size=(users, items)) * 0.3  # ignores the user's taste
    logger = {f"u{u}": [f"i{i}" for i in np.argsort(-logger_score[u])[:k]] for u in range(users)}
    examine = 1 / np.log2(np.arange(1, k + 1) + 1)
    slots = []
    for n in range(answers):
        u = int(rng.integers(users))
        shown = [int(i[1:]) for i in logger[f"u{u}"]]
        explored = np.flatnonzero(rng.random(k) < rate)
        drawn = rng.choice(items, size=len(explored), replace=False)
        rest = iter(i for i in shown if i not in set(drawn.tolist()))
        at = dict(zip(explored.tolist(), drawn.tolist()))
        answer = [at[s] if s in at else next(rest) for s in range(k)]
        clicks = rng.random(k) < examine * p[u, answer]
        for s, i in enumerate(answer):
            slots.append(Slot(f"r{n}", f"u{u}", f"i{i}", s + 1, s in at, bool(clicks[s]), items if s in at else 0,
                              "default", "v1", "user", 0.0))
    return p, logger, examine, slots


def test_replay_is_unbiased_and_the_naive_estimate_favours_the_logger():
    p, logger, examine, slots = simulated_log()
    users, items = p.shape
    k = len(examine)
    good = {f"u{u}": [f"i{i}" for i in np.argsort(-p[u])[:k]] for u in range(users)}  # the true best
    rng = np.random.default_rng(2)
    random_lists = {f"u{u}": [f"i{i}" for i in rng.choice(items, k, replace=False)] for u in range(users)}
    usable = replay_slots(slots)
    mean_examine = np.mean([examine[s.position - 1] for s in usable])
    truth, estimate = {}, {}
    for name, lists in (("good", good), ("logger", logger), ("random", random_lists)):
        rows = [p[int(u[1:]), [int(i[1:]) for i in lst]].mean() for u, lst in lists.items()]
        truth[name] = float(np.mean(rows)) * mean_examine  # what replay estimates (users are drawn uniformly)
        estimate[name] = replay(usable, lists)
        e = estimate[name]
        assert e.shown > 1000
        assert abs(e.ctr - truth[name]) < 4 * e.stderr + 0.002, (name, e.ctr, truth[name], e.stderr)
    assert estimate["good"].ctr > estimate["logger"].ctr and estimate["good"].ctr > estimate["random"].ctr
    assert truth["good"] > truth["logger"]
    # the naive estimate, precision@k on the logged clicks, prefers what the logger showed
    naive = {name: logged_click_precision(slots, lists, k).ctr
             for name, lists in (("good", good), ("logger", logger))}
    assert naive["logger"] > naive["good"], naive
    report = compare(slots, {"good": good, "logger": logger}, k)
    assert report["explored_slots"] == len(usable) and report["candidates"]["good"]["replay"]["ctr"] == \
        estimate["good"].ctr
    assert report["logged"]["explored"]["shown"] == len(usable)


def test_exclusions_keep_what_was_shown():
    s = lambda user, item: Slot("r", user, item, 1, False, False, 0, "d", "v", "user", 0.0)  # noqa: E731
    assert exclusions([s("a", "x"), s("a", "y"), s("b", "z")], {"a": {"x", "q"}, "c": {"w"}}) == \
        {"a": {"q"}, "b": set()}


@pytest.fixture
def env(redis_url, key_prefix, tmp_path):
    world = small_world()
    settings = service_settings(redis_url, key_prefix, tmp_path / "models", exploration_rate=0.5)
    store = seed_store(redis_url, key_prefix, world)
    version = publish_first_model(store, settings)
    holder = ModelHolder()
    holder.swap(build_snapshot(store, load_checked(settings.model_dir, version), version))
    log = ImpressionLog(store, 0, 3600)
    writer = ImpressionWriter(log)
    service = RecommendationService(settings, store, store, holder, watcher=None, impressions=writer)
    return settings, store, service, log, writer, version


def test_the_log_reads_back_into_slots_and_the_console_script_replays_it(env, redis_url, key_prefix, tmp_path):
    settings, store, service, log, writer, version = env
    users = list(service.snapshot().model.uid_map.index[:40])
    answers, clicked = [], []
    for user in users:
        answer = service.recommend(user, 10)
        answers.append(answer)
        service.recommend(user, 5, filters=[["genre:drama"]])  # a restricted answer: not used by replay
        for slot in answer.explored[:1]:
            clicked.append((answer.recommendation_id, user, answer.items[slot][0], slot + 1))
    assert writer.flush() == 80
    service.add_interactions([{"user_id": u, "item_id": i, "weight": 1, "recommendation_id": r}
                              for r, u, i, _ in clicked])
    slots = read_slots(log)
    assert len({s.recommendation_id for s in slots}) == 80
    plain = [s for s in slots if s.context == "user"]
    assert len({s.recommendation_id for s in plain}) == 40 and {s.context for s in slots} == {"user", "restricted"}
    assert {(s.recommendation_id, s.position) for s in slots if s.clicked} == {(r, p) for r, _, _, p in clicked}
    explored = {(a.recommendation_id, k + 1) for a in answers for k in a.explored}
    assert {(s.recommendation_id, s.position) for s in replay_slots(slots)} == explored and len(explored) > 100
    assert all(s.pool > 0 for s in replay_slots(slots))

    out = tmp_path / "report.json"
    env_vars = {"REDIS_URL": redis_url, "REDIS_PREFIX": key_prefix, "MODEL_DIR": settings.model_dir,
                "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run([str(Path(sys.executable).parent / "reco-online-eval"), "--json", str(out)],
                            env=env_vars, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["answers"] == 80 and report["explored_slots"] == len(explored)
    assert report["logged"]["explored"]["clicks"] == len(clicked)
    row = report["candidates"][version]
    assert row["users"] == 40 and version in result.stdout and "replay" in result.stdout
    # matched slots, recomputed: the explored item is in the model's top 10, ranked without what the user had
    # seen except what it was shown (the clicked items are seen now)
    model, snap = service.snapshot().model, service.snapshot()
    skip = exclusions(plain, {u: store.get_user(u).seen for u in users})
    matched = clicks = 0
    for s in replay_slots(slots):
        top = {i for i, _ in model.rank(s.user_id, 10, item_features=snap.items, exclude=skip[s.user_id],
                                        user_features=store.get_user(s.user_id).features).items}
        matched += s.item_id in top
        clicks += s.item_id in top and s.clicked
    assert (row["replay"]["shown"], row["replay"]["clicks"]) == (matched, clicks)
