"""The web page under /ui/, driven in a real headless Chromium against a real gunicorn (2 workers) and Redis.

The browser is Debian's chromium driven through the Python playwright package (Playwright's own browser
download is not reachable here). ``make test`` installs chromium when it is missing; under CI=true a
browser that cannot start fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
import redis
import requests

from recommender.launch import start_gunicorn
from recommender.localredis import free_port
from tests.helpers import TOKEN, publish_first_model, seed_store, service_settings, small_world, wait_for

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRONG_TOKEN = "not-the-admin-token-9876543210"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: an id the API must refuse ("/" separates path segments), and two hostile strings it accepts
SCRIPT_ID = "<script>alert(1)</script>"
HOSTILE_ITEM = "<img src=x onerror=alert(1)>"
HOSTILE_FEATURE = "<script>alert(2)</script>"
TIMEOUT_MS = 15_000
API_ANSWER = "Failed to load resource: the server responded with a status of"  # how Chromium logs a 4xx/5xx


def browser_unavailable(reason: str):
    """Fail under CI (the browser tests must run there), skip with the reason elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium (a fresh profile) for the module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        browser_unavailable("the playwright package is not installed (pip install -r requirements-dev.txt)")
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        browser_unavailable(f"no chromium executable at {executable} (make test installs it with apt as root; "
                            "or set CHROMIUM=/path/to/chromium)")
    playwright = sync_playwright().start()
    try:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1280, "height": 860})
    except Exception as exc:  # an installed browser that does not start is a failure everywhere
        playwright.stop()
        pytest.fail(f"chromium at {executable} did not start: {exc}")
    yield context
    context.close()
    playwright.stop()


@pytest.fixture(scope="module")
def world():
    return small_world()


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under a test prefix."""
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])
    client.close()


@pytest.fixture(scope="module")
def env(redis_url, tmp_path_factory, world):
    """A seeded store, a published model and gunicorn (2 workers, in-app trainer, access log on)."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    tmp = tmp_path_factory.mktemp("ui")
    settings = service_settings(redis_url, prefix, tmp / "models", trainer_in_app=True, watch_interval=0.2)
    store = seed_store(redis_url, prefix, world)
    version = publish_first_model(store, settings)
    # the access log is on so that the test can show the token is not in it
    service = start_gunicorn(settings, tmp, workers=2, env={**os.environ, "ACCESS_LOG": "-", "LOG_LEVEL": "info"})
    yield type("Env", (), dict(base=service.base, store=store, settings=settings, version=version, service=service))
    service.stop()
    delete_prefix(redis_url, prefix)


class Page:
    """A browser tab on the service, recording what must never happen: dialogs, page errors, console errors,
    requests to another origin."""

    def __init__(self, context, base: str):
        self.base = base
        self.tab = context.new_page()
        self.tab.set_default_timeout(TIMEOUT_MS)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.tab.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.tab.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.tab.on("console", self._console)
        self.tab.on("request", lambda request: self.urls.append(request.url))

    def _console(self, message) -> None:
        # the API's 4xx/5xx answers are expected (the page shows them); anything else, CSP refusals
        # included, is an error of the page
        if message.type == "error" and not message.text.startswith(API_ANSWER):
            self.errors.append(message.text)

    def open(self, query: str = "") -> None:
        """Load /ui/ with a query string (a fresh page load; the tab's sessionStorage stays)."""
        self.tab.goto(f"{self.base}/ui/{query}")

    def done(self, card: str) -> None:
        """Wait until a card finished loading (its data-state is "done" or "error")."""
        self.tab.wait_for_selector(f"#{card}[data-state=done], #{card}[data-state=error]")

    def text(self, selector: str) -> str:
        """The rendered text of the one element ``selector`` matches."""
        return self.tab.locator(selector).inner_text()

    def texts(self, selector: str) -> list[str]:
        """The rendered text of every element ``selector`` matches, in document order."""
        return self.tab.locator(selector).all_inner_texts()

    def use_token(self, token: str) -> str:
        """Enter a token in the page (it replaces the one kept); returns the service's verdict as the page shows it."""
        self.tab.fill("#token-input", token)
        self.tab.click("#token-form button")
        self.tab.wait_for_selector("#token-check[data-state=accepted], #token-check[data-state=rejected]")
        return self.tab.get_attribute("#token-check", "data-state")

    def shoot(self, name: str) -> None:
        """Save a screenshot into UI_SCREENSHOT_DIR when set (how docs/ui_*.png are made)."""
        folder = os.environ.get("UI_SCREENSHOT_DIR")
        if folder:
            self.tab.screenshot(path=str(Path(folder) / name), full_page=True)

    def close(self) -> None:
        """Close the tab and assert that nothing it must never do happened."""
        self.tab.close()
        assert not self.dialogs, f"a dialog fired: {self.dialogs}"
        assert not self.errors, f"the page logged errors: {self.errors}"
        foreign = [u for u in self.urls if not u.startswith(self.base) and not u.startswith("data:")]
        assert not foreign, f"the page fetched from elsewhere: {foreign}"


@pytest.fixture
def page(browser, env):
    tab = Page(browser, env.base)
    yield tab
    tab.close()


def api_items(env, path: str) -> dict:
    """The JSON answer of a public GET (asserting a 200)."""
    r = requests.get(env.base + path, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------- plain HTTP


class _Markup(HTMLParser):
    """The tags and attributes of a document."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_the_page_and_its_assets_carry_a_csp_that_forbids_inline_script(env):
    r = requests.get(env.base + "/ui/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'" and directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert "unsafe" not in csp and "http" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    markup = _Markup()
    markup.feed(r.text)
    scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
    assert scripts and all(attrs.get("src", "").startswith("/ui/static/") for attrs in scripts)
    assert "<style" not in r.text
    assert not [(tag, a) for tag, attrs in markup.tags for a in attrs if a == "style" or a.startswith("on")]
    links = [attrs.get("src") or attrs.get("href") for _, attrs in markup.tags if attrs.get("src") or attrs.get("href")]
    assert not [link for link in links if "//" in link], links  # every asset from this origin
    for asset in ("ui.js", "ui.css", "favicon.svg"):
        served = requests.get(f"{env.base}/ui/static/{asset}", timeout=10)
        assert served.status_code == 200 and served.headers["Content-Security-Policy"] == csp, asset
    script = requests.get(env.base + "/ui/static/ui.js", timeout=10).text
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(", script)
    assert requests.get(env.base + "/ui", timeout=10, allow_redirects=False).status_code in (301, 308)


# ---------------------------------------------------------------------------------------------- in the browser


def test_user_lookup_shows_the_apis_items_in_the_apis_order(page, env, world):
    known = world.interactions["user_id"].iloc[0]
    features_only = sorted(set(world.user_features["user_id"]) - set(world.interactions["user_id"]))[0]
    for user, strategy in ((known, "personalized"), (features_only, "features"), ("nobody-at-all", "popular")):
        page.open("?" + urlencode({"user": user, "n": 7}))  # a bookmarkable link shows the answer at once
        page.done("user-recs")
        api = api_items(env, f"/recommend/{quote(user, safe='')}?n=7")
        assert api["strategy"] == strategy
        assert page.texts("#user-recs .item-id") == [i["item_id"] for i in api["items"]], user
        assert page.texts("#user-recs .score") == [f"{i['score']:.4f}" for i in api["items"]]
        assert page.text("#user-recs-meta .strategy") == strategy
        assert api["model_version"] in page.text("#user-recs-meta")
        assert "admin token" in page.text("#user-info")  # no token: the admin data is not shown
    # the form: n, a filter ("a|b" is either, "," separates groups that must all hold) and seen items kept
    genre = sorted(f for f in world.item_features["feature"] if f.startswith("genre:"))[0]
    page.tab.fill("#user-id", known)
    page.tab.fill("#user-n", "5")
    page.tab.fill("#user-filter", f"{genre}|genre:nothing-such")
    page.tab.uncheck("#user-exclude-seen")
    page.tab.click("#user-form button")
    page.done("user-recs")
    api = api_items(env, f"/recommend/{quote(known)}?" + urlencode(
        {"n": 5, "filter": f"{genre}|genre:nothing-such", "exclude_seen": "false"}))
    shown = page.texts("#user-recs .item-id")
    assert shown == [i["item_id"] for i in api["items"]] and len(shown) == 5
    assert "exclude_seen=false" in page.tab.url and "user=" in page.tab.url  # the answer can be linked
    page.open("?" + urlencode({"user": known, "n": 1000}))  # a bad n gets the API's own error
    page.done("user-recs")
    assert "400 invalid_parameter" in page.text("#user-recs .error") and "n must be between" in page.text("#user-recs")


def test_admin_data_shows_with_the_token_and_the_feature_edit_reaches_redis(page, env, world):
    user = world.interactions["user_id"].iloc[0]
    page.open("?" + urlencode({"user": user}))
    page.done("user-recs")
    assert page.use_token(TOKEN) == "accepted"
    page.done("user-info")  # the views reload with the admin data
    seen = sorted(world.interactions.loc[world.interactions["user_id"] == user, "item_id"].unique())
    assert sorted(page.texts("#user-seen li")) == seen
    stored = env.store.describe_user(user)["features"]
    names = page.tab.locator("#user-features .feature-name")
    assert sorted(names.evaluate_all("inputs => inputs.map(i => i.value)")) == sorted(stored)
    page.shoot("ui_user.png")
    # add a feature and save: the store holds exactly what the editor shows
    page.tab.click("#user-features button.secondary")
    page.tab.locator("#user-features .feature-name").last.fill("interest:ui-test")
    page.tab.locator("#user-features .feature-weight").last.fill("0.5")
    page.tab.click("#user-features button.save")
    page.tab.wait_for_selector("#user-info .editor-message .ok")
    assert env.store.describe_user(user)["features"] == {**stored, "interest:ui-test": 0.5}
    # the item view: similar items as the API ranks them, the stored features, known to the model
    item = world.interactions["item_id"].iloc[0]
    page.tab.locator("#user-seen a", has_text=re.compile(f"^{re.escape(seen[0])}$")).click()
    page.done("item-similar")
    page.done("item-info")
    assert page.text("#item-similar-id") == seen[0]
    api = api_items(env, f"/items/{quote(seen[0])}/similar?n={env.settings.default_n}")
    assert page.texts("#item-similar .item-id") == [i["item_id"] for i in api["items"]]
    assert "yes" in page.text("#item-info dl")
    page.open("?" + urlencode({"item": item}))
    page.done("item-similar")
    page.done("item-info")
    page.shoot("ui_item.png")


def test_script_like_ids_and_feature_names_render_as_text(page, env, world):
    # an id with "/" is refused by the API however it is encoded, so the page can never receive one...
    refused = requests.put(f"{env.base}/items/{quote(SCRIPT_ID, safe='')}/features", json={"a": 1}, headers=AUTH,
                           timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_id"
    # ...and an id that runs script when parsed as HTML (innerHTML would fire onerror) is accepted
    genre = sorted(f for f in world.item_features["feature"] if f.startswith("genre:"))[0]
    r = requests.put(f"{env.base}/items/{quote(HOSTILE_ITEM, safe='')}/features", headers=AUTH, timeout=10,
                     json={genre: 1, HOSTILE_FEATURE: 1})
    assert r.status_code == 200, r.text
    r = requests.post(env.base + "/interactions", headers=AUTH, timeout=10,
                      json={"user_id": "hostile-fan", "item_id": HOSTILE_ITEM})
    assert r.status_code == 200, r.text
    # the only item with the hostile feature: every worker knows it within WATCH_INTERVAL
    by_feature = "?" + urlencode({"filter": HOSTILE_FEATURE})
    wait_for(lambda: all([i["item_id"] for i in api_items(env, "/recommend/nobody-ui" + by_feature)["items"]]
                         == [HOSTILE_ITEM] for _ in range(4)), timeout=10)

    page.open("?" + urlencode({"user": "nobody-ui", "filter": HOSTILE_FEATURE}))
    page.done("user-recs")
    assert page.texts("#user-recs .item-id") == [HOSTILE_ITEM]
    assert page.tab.input_value("#user-filter") == HOSTILE_FEATURE
    assert page.use_token(TOKEN) == "accepted"
    page.open("?" + urlencode({"user": "hostile-fan"}))
    page.done("user-info")
    assert page.texts("#user-seen li") == [HOSTILE_ITEM]
    page.tab.click("#user-seen a")  # the link leads to the item view with the id intact
    page.done("item-info")
    page.done("item-similar")
    assert page.text("#item-similar-id") == HOSTILE_ITEM and page.tab.input_value("#item-id") == HOSTILE_ITEM
    names = page.tab.locator("#item-features .feature-name").evaluate_all("inputs => inputs.map(i => i.value)")
    assert sorted(names) == sorted([genre, HOSTILE_FEATURE])
    assert "yes (may be recommended)" in page.text("#item-info dl")
    # the refused id gets the API's error, as text
    page.open("?" + urlencode({"item": SCRIPT_ID}))
    page.done("item-similar")
    assert "400 invalid_id" in page.text("#item-similar .error")
    assert page.text("#item-similar-id") == SCRIPT_ID
    assert page.tab.locator("img").count() == 0 and page.tab.locator("main script").count() == 0
    assert page.dialogs == []  # checked again when the tab closes, after everything above ran


def test_a_wrong_token_shows_an_error_and_changes_nothing(page, env, world):
    user = world.interactions["user_id"].iloc[1]
    features_key = env.store.keys.user_features(user)
    before = env.store.client.hgetall(features_key)
    jobs_before = requests.get(env.base + "/retrain?limit=100", headers=AUTH, timeout=10).json()["jobs"]

    page.open("?" + urlencode({"user": user}))
    assert page.use_token(WRONG_TOKEN) == "rejected"
    assert "401" in page.text("#token-check")
    # a mistyped replacement: the admin card already shown keeps its editor, and saving with it fails
    assert page.use_token(TOKEN) == "accepted"
    page.done("user-info")
    assert page.use_token(WRONG_TOKEN) == "rejected"
    page.tab.locator("#user-features .feature-weight").first.fill("42")
    page.tab.click("#user-features button.save")
    page.tab.wait_for_selector("#user-info .editor-message .error")
    assert "401 unauthorized" in page.text("#user-info .editor-message")
    assert env.store.client.hgetall(features_key) == before  # nothing written
    # a fresh lookup with the wrong token: the admin card is an error, the public answer still shows
    page.open("?" + urlencode({"user": user}))
    page.done("user-info")
    page.done("user-recs")
    assert "401 unauthorized" in page.text("#user-info .error")
    assert page.texts("#user-recs .item-id")
    # a retrain with the wrong token: an error, and no job
    page.open("?view=model")
    page.tab.click("#retrain-start")
    page.tab.wait_for_selector("#retrain-message .error")
    assert "401" in page.text("#retrain-message")
    assert requests.get(env.base + "/retrain?limit=100", headers=AUTH, timeout=10).json()["jobs"] == jobs_before
    # the token never left the page except as the header: not in a URL, the DOM, the HTML or the log
    html = page.tab.content()
    assert TOKEN not in html and WRONG_TOKEN not in html
    assert not [u for u in page.urls if TOKEN in u or WRONG_TOKEN in u]
    log = Path(env.service.log_path).read_text(errors="replace")
    assert '"GET /ui/' in log  # the access log is on...
    assert TOKEN not in log and WRONG_TOKEN not in log  # ...and holds neither token


def retrain_through_the_api(env, force: bool) -> dict:
    """A retrain job queued through the API, once it finished."""
    r = requests.post(env.base + "/retrain", json={"force": force}, headers=AUTH, timeout=10)
    assert r.status_code == 202 and r.json()["created"], r.text
    job_id = r.json()["job_id"]
    return wait_for(lambda: (lambda job: job if job["status"] in ("succeeded", "failed") else None)(
        requests.get(f"{env.base}/retrain/{job_id}", headers=AUTH, timeout=10).json()), timeout=60)


def test_a_retrain_started_from_the_page_succeeds_and_the_page_shows_the_new_version(page, env):
    for force in (False, True):  # some history: a gated job (accepted or rejected) and a forced one
        assert retrain_through_the_api(env, force)["status"] == "succeeded"
    newest = requests.get(env.base + "/retrain?limit=1", headers=AUTH, timeout=10).json()["jobs"][0]["version"]
    wait_for(lambda: all(requests.get(env.base + "/ready", headers={"Connection": "close"}, timeout=10).json()
                         ["model_version"] == newest for _ in range(8)))  # both workers serve it
    page.open("?view=model")
    page.done("model-card")
    old = page.text("#model-version")
    assert old == requests.get(env.base + "/model", timeout=10).json()["version"]
    assert "The retrain history is admin data" in page.text("#history-card")
    assert page.use_token(TOKEN) == "accepted"
    page.done("history-card")
    page.tab.check("#retrain-force")
    page.tab.click("#retrain-start")
    page.tab.wait_for_selector("#job-status[data-status=succeeded]", timeout=60_000)
    job_id = page.text("#job-id")
    job = requests.get(f"{env.base}/retrain/{job_id}", headers=AUTH, timeout=10).json()
    assert job["status"] == "succeeded" and job["version"] != old
    page.tab.wait_for_function("v => document.getElementById('model-version').textContent === v", arg=job["version"],
                               timeout=20_000)
    assert "now serving" in page.text("#job-detail")
    page.done("history-card")
    history = requests.get(env.base + "/retrain?limit=20", headers=AUTH, timeout=10).json()["jobs"]
    rows = page.tab.locator("#history-card tbody tr")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.jobId)") == [j["job_id"] for j in history]
    assert history[0]["job_id"] == job_id and len(history) >= 3  # newest first
    assert page.tab.locator("#history-card svg.chart circle.point:not(.baseline)").count() == len(
        [j for j in history if "precision_at_k" in j.get("metrics", {})])
    metrics = page.texts("#metrics-card td:first-child")
    assert "precision_at_k" in metrics and "skipped_records.malformed" in metrics  # nested metrics flattened
    page.shoot("ui_model.png")


def test_a_service_without_redis_or_a_model_says_so(browser, redis_url, tmp_path):
    """The states of /ready, shown: no model loaded, Redis unavailable; lookups show the API's 503."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = service_settings(dead_redis, "test:ui-down:", tmp_path / "models")
    service = start_gunicorn(settings, tmp_path, workers=1, wait_ready=False)
    tab = Page(browser, service.base)
    try:
        tab.open("?" + urlencode({"user": "u1"}))
        tab.tab.wait_for_selector("#status[data-state=not-ready]")
        assert tab.text("#status") == "Not ready"
        banner = tab.text("#status-banner")
        assert "No model loaded" in banner and "Redis unavailable" in banner
        tab.done("user-recs")
        assert "503 no_model" in tab.text("#user-recs .error")
        tab.shoot("ui_not_ready.png")
    finally:
        service.stop()
        tab.close()
