// Recommender explorer: the page under /ui/. Plain browser JavaScript, no build step, no library.
//
// Everything shown comes from the service's own JSON API. Rules kept throughout:
// - data (ids, feature names, strategies, messages) reaches the page only as text: elements are built
//   with createElement and textContent, never with innerHTML;
// - ids go into URLs through encodeURIComponent (path segments) or URLSearchParams (query strings);
// - the admin token lives in sessionStorage and leaves the page only as the Authorization header.
"use strict";

(function () {
  const TOKEN_KEY = "reco.adminToken";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const body = document.body;
  const API = body.dataset.apiRoot || "";
  const DEFAULT_N = Number(body.dataset.defaultN) || 10;
  const VIEWS = ["user", "item", "model"];
  // what each known strategy means; a strategy not listed here is shown as given, without a note
  const STRATEGY_NOTES = {
    personalized: "known user: collaborative and feature scores",
    features: "user not seen in training: scored through its features",
    interactions: "recent interactions the model did not train on, folded in",
    session: "recent items of a session, no known user",
    popular: "nothing usable known about the user: the popularity baseline",
  };

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ DOM helpers (text only)

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  // data-state on a card: "loading", "done" or "error" (what a test or a user can wait for). Each
  // "loading" starts a new generation of the card: an answer that arrives after a newer lookup began is
  // dropped (outdated(id, generation)), so a slow old answer never overwrites a newer one.
  const generations = {};
  function mark(id, state) {
    $(id).dataset.state = state;
    if (state === "loading") generations[id] = (generations[id] || 0) + 1;
    return generations[id];
  }
  const outdated = (id, generation) => generations[id] !== generation;

  function clear(node) {
    node.replaceChildren();
    return node;
  }

  function fill(node, ...children) {
    clear(node).append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function errorBox(err) {
    const status = err.status ? `${err.status} ${err.code}` : err.code;
    return el("div", { class: "error", role: "alert" }, el("strong", { text: status }), ": ", err.message);
  }

  function note(text) {
    return el("p", { class: "note", text });
  }

  function loading() {
    return el("p", { class: "loading", text: "loading…" });
  }

  // headers: "text", or ["text", "class"] (e.g. "num" for a right-aligned column)
  function table(headers, rows, cls) {
    const head = el("tr", {}, ...headers.map((h) => (Array.isArray(h) ? el("th", { text: h[0], class: h[1] })
      : el("th", { text: h }))));
    const tbody = el("tbody", {}, ...rows);
    return el("table", { class: cls || "" }, el("thead", {}, head), tbody);
  }

  function keyValues(pairs) {
    return el("dl", { class: "kv" }, ...pairs.flatMap(([k, v]) => [el("dt", { text: k }),
      el("dd", {}, v instanceof Node ? v : formatValue(v))]));
  }

  function badge(text, kind, title) {
    return el("span", { class: `badge ${kind || ""}`, text, title });
  }

  function formatValue(value) {
    if (value === null || value === undefined) return "—";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number") {
      if (Number.isInteger(value)) return value.toLocaleString("en-US");
      return Math.abs(value) >= 1000 ? value.toFixed(1) : String(Number(value.toPrecision(4)));
    }
    if (Array.isArray(value) || typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function formatTime(seconds) {
    if (typeof seconds !== "number") return "—";
    const d = new Date(seconds * 1000);
    const pad = (x) => String(x).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:` +
      `${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // nested metrics (per population, per k...) as dotted keys: {"warm": {"precision": 1}} -> "warm.precision"
  function flatten(value, prefix, out) {
    out = out || [];
    for (const [key, inner] of Object.entries(value || {})) {
      const name = prefix ? `${prefix}.${key}` : key;
      if (inner && typeof inner === "object" && !Array.isArray(inner)) flatten(inner, name, out);
      else out.push([name, inner]);
    }
    return out;
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      return "";
    }
  }

  async function api(path, options) {
    const { method = "GET", json, admin = false } = options || {};
    const headers = { Accept: "application/json" };
    if (admin) {
      const t = token();
      if (!t) throw new ApiError(0, "admin_token_needed", "enter the admin token at the top of the page first");
      headers.Authorization = `Bearer ${t}`;
    }
    if (json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(API + path, {
        method, headers, cache: "no-store", credentials: "same-origin", redirect: "error",
        body: json === undefined ? undefined : JSON.stringify(json),
      });
    } catch (e) {
      refreshStatus();
      throw new ApiError(0, "unreachable", "the service did not answer");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      if (response.status === 503) refreshStatus();
      throw new ApiError(response.status, error.code || "error", error.message || response.statusText);
    }
    return data;
  }

  const segment = (id) => encodeURIComponent(id);

  // "a, b|c" -> ["a", "b|c"]: one filter= parameter per comma-separated group (names cannot hold commas)
  function filterGroups(text) {
    return (text || "").split(",").map((g) => g.split("|").map((n) => n.trim()).filter(Boolean).join("|"))
      .filter(Boolean);
  }

  // ------------------------------------------------------------------ readiness (the states of /ready)

  async function refreshStatus() {
    const node = $("status");
    const banner = $("status-banner");
    let data = null;
    try {
      const response = await fetch(`${API}/ready`, { cache: "no-store" });
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!data) {
      node.dataset.state = "down";
      fill(node, el("strong", { text: "Service unreachable" }));
      fill(banner, "The service did not answer GET /ready: nothing on this page can load until it does.");
      banner.hidden = false;
      return;
    }
    if (data.ready) {
      node.dataset.state = "ready";
      fill(node, el("strong", { text: "Ready" }), " · model ", el("code", { text: data.model_version }));
      banner.hidden = true;
      return;
    }
    // the same states as GET /ready: no model loaded, Redis unavailable (either or both)
    const reasons = [];
    if (!data.model_loaded) {
      reasons.push(el("li", {}, el("strong", { text: "No model loaded" }),
        ": recommendations and similar items answer 503 until one is trained (Model → Start a retrain)."));
    }
    if (data.redis !== "ok") {
      reasons.push(el("li", {}, el("strong", { text: "Redis unavailable" }),
        ": stored features, seen items, jobs and every change fail; recommendations come from the model " +
        "alone (marked degraded)."));
    }
    node.dataset.state = "not-ready";
    fill(node, el("strong", { text: "Not ready" }),
      data.model_version ? el("span", {}, " · model ", el("code", { text: data.model_version })) : null);
    fill(banner, el("ul", {}, ...reasons));
    banner.hidden = false;
  }

  // ------------------------------------------------------------------ admin token

  // the form stays: entering another token replaces the one kept (a token that the service rejects
  // replaces it too, and the views keep what they show until the next lookup)
  function renderToken() {
    const has = Boolean(token());
    $("token-state").hidden = !has;
    $("token-input").placeholder = has ? "another token replaces it" : "ADMIN_TOKEN";
    $("token-form").querySelector("button").textContent = has ? "Replace" : "Use for this tab";
  }

  // asks the service whether it takes the token; true when it does
  async function checkToken() {
    const node = $("token-check");
    fill(node, "checking…");
    node.dataset.state = "checking";
    try {
      await api("/retrain?limit=1", { admin: true });
      node.dataset.state = "accepted";
      fill(node, "· accepted by the service");
      return true;
    } catch (err) {
      node.dataset.state = err.status === 401 || err.status === 403 ? "rejected" : "unchecked";
      if (err.status === 401) fill(node, "· rejected by the service (401): enter the right one to replace it");
      else if (err.status === 403) fill(node, "· admin endpoints are disabled on this service (no ADMIN_TOKEN)");
      else fill(node, `· could not check it: ${err.message}`);
      return false;
    }
  }

  function setupToken() {
    $("token-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = $("token-input");
      const value = input.value.trim();
      input.value = "";
      if (!value) return;
      try {
        sessionStorage.setItem(TOKEN_KEY, value);
      } catch (e) {
        fill($("token-check"), "· this browser refuses session storage");
      }
      renderToken();
      if (await checkToken()) route();  // show the admin data the views left out
    });
    $("token-forget").addEventListener("click", () => {
      try {
        sessionStorage.removeItem(TOKEN_KEY);
      } catch (e) { /* nothing stored */ }
      renderToken();
      route();
    });
    renderToken();
    if (token()) checkToken();
  }

  // ------------------------------------------------------------------ navigation

  function go(params) {
    history.pushState(null, "", `?${params.toString()}`);
    route();
  }

  function itemLink(id) {
    const params = new URLSearchParams({ item: id });
    return el("a", {
      href: `?${params}`, class: "id", text: id,
      onclick: (event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        go(params);
      },
    });
  }

  function showView(view) {
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    for (const link of document.querySelectorAll(".tabs a")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function route() {
    const params = new URLSearchParams(location.search);
    if (params.has("user")) {
      showView("user");
      lookupUser(params);
    } else if (params.has("item")) {
      showView("item");
      lookupItem(params);
    } else {
      const view = VIEWS.includes(params.get("view")) ? params.get("view") : "user";
      showView(view);
      if (view === "model") loadModel();
      else for (const id of ["user-recs", "user-info", "item-similar", "item-info"]) $(id).hidden = true;
    }
  }

  // n as the link gives it (the API answers a bad one with its own 400), DEFAULT_N when absent
  function nValue(params) {
    const n = (params.get("n") || "").trim();
    return n || String(DEFAULT_N);
  }

  // ------------------------------------------------------------------ user view

  function setupUserForm() {
    $("user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const params = new URLSearchParams({ user: $("user-id").value.trim(), n: $("user-n").value || DEFAULT_N });
      for (const group of filterGroups($("user-filter").value)) params.append("filter", group);
      if (!$("user-exclude-seen").checked) params.set("exclude_seen", "false");
      go(params);
    });
  }

  async function lookupUser(params) {
    const userId = params.get("user");
    const n = nValue(params);
    const filters = params.getAll("filter");
    const excludeSeen = params.get("exclude_seen") !== "false";
    $("user-id").value = userId;
    $("user-n").value = n;
    $("user-filter").value = filters.join(", ");
    $("user-exclude-seen").checked = excludeSeen;
    $("user-recs").hidden = false;
    $("user-info").hidden = false;
    $("user-recs-id").textContent = userId;
    clear($("user-recs-meta"));
    fill($("user-recs-body"), loading());
    const query = new URLSearchParams({ n });
    for (const f of filters) query.append("filter", f);
    if (!excludeSeen) query.set("exclude_seen", "false");
    await Promise.all([loadRecommendations(userId, query), loadUserInfo(userId)]);
  }

  async function loadRecommendations(userId, query) {
    const meta = $("user-recs-meta");
    const out = $("user-recs-body");
    let answer;
    const generation = mark("user-recs", "loading");
    try {
      answer = await api(`/recommend/${segment(userId)}?${query}`);
    } catch (err) {
      if (outdated("user-recs", generation)) return;
      fill(out, errorBox(err));
      mark("user-recs", "error");
      return;
    }
    if (outdated("user-recs", generation)) return;
    const explained = STRATEGY_NOTES[answer.strategy];
    fill(meta,
      el("span", { class: "line" }, "strategy ", badge(answer.strategy, "strategy", explained),
        explained ? el("span", { class: "muted", text: ` ${explained}` }) : null),
      el("span", { class: "line" }, "model ", el("code", { text: answer.model_version }),
        answer.degraded ? badge("degraded", "warn") : null,
        answer.degraded ? el("span", { class: "warn-text", text: " Redis did not answer: the model alone answered " +
          "(training-time features, seen items not left out)" }) : null));
    meta.dataset.strategy = answer.strategy;
    if (!answer.items.length) fill(out, note("No items: the catalogue, the filter or the exclusions left none."));
    else {
      const rows = answer.items.map((item, k) => el("tr", {},
        el("td", { class: "rank", text: k + 1 }),
        el("td", { class: "item-id" }, itemLink(item.item_id)),
        el("td", { class: "score num", text: item.score.toFixed(4) })));
      fill(out, table(["#", "item", ["score", "num"]], rows, "recs"));
    }
    mark("user-recs", "done");
  }

  async function loadUserInfo(userId) {
    const out = $("user-info-body");
    if (!token()) {
      fill(out, note("Features and seen items are admin data: enter the admin token at the top to see and edit them."));
      mark("user-info", "done");
      return;
    }
    fill(out, loading());
    const generation = mark("user-info", "loading");
    let info;
    try {
      info = await api(`/users/${segment(userId)}`, { admin: true });
    } catch (err) {
      if (outdated("user-info", generation)) return;
      fill(out, errorBox(err));
      mark("user-info", "error");
      return;
    }
    if (outdated("user-info", generation)) return;
    const seenItems = info.seen_items || [];
    const seen = el("div", { class: "seen" },
      el("h3", { text: seenItems.length < info.seen ? `Seen items (${seenItems.length} of ${info.seen})`
        : `Seen items (${info.seen})` }),
      seenItems.length ? el("ul", { class: "chips", id: "user-seen" },
        ...seenItems.map((id) => el("li", {}, itemLink(id)))) : note("none"));
    fill(out,
      keyValues([["known to the model", knownText(info.known_to_model)], ["seen items", info.seen],
        ["negative signals", info.negative], ["interactions in the log", info.interactions]]),
      featureEditor("user", userId, info.features, () => loadUserInfo(userId)),
      seen);
    mark("user-info", "done");
  }

  function knownText(known) {
    if (known === null || known === undefined) return "— (no model loaded)";
    return known ? "yes (seen in training)" : "no (not in training)";
  }

  // ------------------------------------------------------------------ features: show and edit

  function featureEditor(kind, entityId, features, reload) {
    const rows = el("tbody", {});
    const message = el("div", { class: "editor-message", role: "status" });
    const addRow = (name, weight) => {
      const row = el("tr", {},
        el("td", {}, el("input", { class: "feature-name", value: name, spellcheck: "false", "aria-label": "feature" })),
        el("td", {}, el("input", { class: "feature-weight", type: "number", step: "any", value: String(weight),
          "aria-label": "weight" })),
        el("td", {}, el("button", { type: "button", class: "link", text: "remove", onclick: () => row.remove() })));
      rows.append(row);
    };
    const entries = Object.entries(features || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [name, weight] of entries) addRow(name, weight);
    const save = async () => {
      const body = {};
      for (const row of rows.querySelectorAll("tr")) {
        const name = row.querySelector(".feature-name").value.trim();
        const weight = Number(row.querySelector(".feature-weight").value);
        if (!name) continue;
        if (!Number.isFinite(weight)) {
          fill(message, errorBox(new ApiError(0, "invalid_weight", `the weight of ${name} is not a number`)));
          return;
        }
        if (name in body) {
          fill(message, errorBox(new ApiError(0, "duplicate_feature", `${name} is listed twice`)));
          return;
        }
        body[name] = weight;
      }
      fill(message, "saving…");
      try {
        await api(`/${kind}s/${segment(entityId)}/features`, { method: "PUT", json: body, admin: true });
      } catch (err) {
        fill(message, errorBox(err));
        return;
      }
      await reload();
      const again = document.querySelector(`#${kind}-info .editor-message`);
      if (again) fill(again, el("span", { class: "ok", text: `saved ${Object.keys(body).length} features` }));
    };
    const state = features === null || features === undefined
      ? "No features written: scored with its training-time features."
      : (entries.length ? null : "Set to no features: scored by its identity alone (when the model knows it).");
    return el("form", { class: "editor", id: `${kind}-features`, onsubmit: (e) => { e.preventDefault(); save(); } },
      el("h3", { text: `Features (${entries.length})` }),
      state ? note(state) : null,
      el("table", { class: "features" },
        el("thead", {}, el("tr", {}, el("th", { text: "feature" }), el("th", { text: "weight" }), el("th", {}))),
        rows),
      el("div", { class: "editor-actions" },
        el("button", { type: "button", class: "secondary", text: "Add a feature", onclick: () => addRow("", 1) }),
        el("button", { type: "submit", class: "save", text: "Save features" })),
      el("p", { class: "hint", text: "Saving replaces every feature at once; an empty list means “no features”." }),
      message);
  }

  // ------------------------------------------------------------------ item view

  function setupItemForm() {
    $("item-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const params = new URLSearchParams({ item: $("item-id").value.trim(), n: $("item-n").value || DEFAULT_N });
      for (const group of filterGroups($("item-filter").value)) params.append("filter", group);
      go(params);
    });
  }

  async function lookupItem(params) {
    const itemId = params.get("item");
    const n = nValue(params);
    const filters = params.getAll("filter");
    $("item-id").value = itemId;
    $("item-n").value = n;
    $("item-filter").value = filters.join(", ");
    $("item-similar").hidden = false;
    $("item-info").hidden = false;
    $("item-similar-id").textContent = itemId;
    clear($("item-similar-meta"));
    fill($("item-similar-body"), loading());
    const query = new URLSearchParams({ n });
    for (const f of filters) query.append("filter", f);
    await Promise.all([loadSimilar(itemId, query), loadItemInfo(itemId)]);
  }

  async function loadSimilar(itemId, query) {
    const out = $("item-similar-body");
    let answer;
    const generation = mark("item-similar", "loading");
    try {
      answer = await api(`/items/${segment(itemId)}/similar?${query}`);
    } catch (err) {
      if (outdated("item-similar", generation)) return;
      fill(out, errorBox(err));
      mark("item-similar", "error");
      return;
    }
    if (outdated("item-similar", generation)) return;
    fill($("item-similar-meta"),
      el("span", { class: "line" }, "known to the model ",
        badge(answer.known_to_model ? "yes" : "no: placed by its features", answer.known_to_model ? "ok" : "muted")),
      el("span", { class: "line" }, "model ", el("code", { text: answer.model_version })));
    if (!answer.items.length) fill(out, note("No similar items: the catalogue, the filter or the exclusions left none."));
    else {
      const rows = answer.items.map((item, k) => el("tr", {},
        el("td", { class: "rank", text: k + 1 }),
        el("td", { class: "item-id" }, itemLink(item.item_id)),
        el("td", { class: "score num", text: item.score.toFixed(4) })));
      fill(out, table(["#", "item", ["cosine", "num"]], rows, "similar"));
    }
    mark("item-similar", "done");
  }

  async function loadItemInfo(itemId) {
    const out = $("item-info-body");
    if (!token()) {
      fill(out, note("Stored features are admin data: enter the admin token at the top to see and edit them."));
      mark("item-info", "done");
      return;
    }
    fill(out, loading());
    const generation = mark("item-info", "loading");
    let info;
    try {
      info = await api(`/items/${segment(itemId)}`, { admin: true });
    } catch (err) {
      if (outdated("item-info", generation)) return;
      fill(out, errorBox(err));
      mark("item-info", "error");
      return;
    }
    if (outdated("item-info", generation)) return;
    fill(out,
      keyValues([["known to the model", knownText(info.known_to_model)],
        ["in the catalogue", info.in_catalogue ? "yes (may be recommended)" : "no (never recommended)"]]),
      featureEditor("item", itemId, info.features, () => loadItemInfo(itemId)));
    mark("item-info", "done");
  }

  // ------------------------------------------------------------------ model view

  async function loadModel() {
    await Promise.all([loadModelInfo(), loadHistory()]);
  }

  async function loadModelInfo() {
    const out = $("model-body");
    const generation = mark("model-card", "loading");
    let model;
    try {
      model = await api("/model");
    } catch (err) {
      if (outdated("model-card", generation)) return null;
      fill(out, errorBox(err));
      fill($("params-body"), note("no model"));
      fill($("metrics-body"), note("no model"));
      mark("model-card", "error");
      return null;
    }
    if (outdated("model-card", generation)) return null;
    fill(out, keyValues([
      ["version", el("code", { id: "model-version", text: model.version })],
      ["trained", formatTime(model.trained_at)],
      ["loaded by this worker", formatTime(model.loaded_at)],
      ["users in training", model.users],
      ["items in training", model.items],
      ["new catalogue items with features", model.new_items_with_features],
    ]));
    const params = flatten(model.params || {});
    fill($("params-body"), params.length ? table(["setting", ["value", "num"]], params.map(([k, v]) => el("tr", {},
      el("td", { text: k }), el("td", { class: "num", text: formatValue(v) })))) : note("none recorded"));
    const metrics = flatten(model.metrics || {});
    fill($("metrics-body"), metrics.length ? table(["metric", ["value", "num"]], metrics.map(([k, v]) => el("tr", {},
      el("td", { text: k }), el("td", { class: "num", text: formatValue(v) }))), "metrics")
      : note("none recorded"));
    mark("model-card", "done");
    return model;
  }

  async function loadHistory() {
    const out = $("history-body");
    if (!token()) {
      fill(out, note("The retrain history is admin data: enter the admin token at the top."));
      mark("history-card", "done");
      return;
    }
    const generation = mark("history-card", "loading");
    let jobs;
    try {
      jobs = (await api("/retrain?limit=20", { admin: true })).jobs;
    } catch (err) {
      if (outdated("history-card", generation)) return;
      fill(out, errorBox(err));
      mark("history-card", "error");
      return;
    }
    if (outdated("history-card", generation)) return;
    if (!jobs.length) {
      fill(out, note("No retrain jobs yet (models published by reco-train --once are not jobs)."));
      mark("history-card", "done");
      return;
    }
    const rows = jobs.map((job) => {
      const m = job.metrics || {};
      return el("tr", { dataset: { jobId: job.job_id } },
        el("td", { text: formatTime(job.created_at) }),
        el("td", {}, el("code", { text: job.job_id })),
        el("td", {}, badge(job.status, `status-${job.status}`)),
        el("td", { text: job.decision || "—", title: m.rejected_because || job.error || undefined }),
        el("td", {}, job.version ? el("code", { text: job.version }) : "—"),
        el("td", { class: "num", text: formatValue(m.precision_at_k) }),
        el("td", { class: "num", text: formatValue(m.baseline_precision_at_k) }),
        el("td", { class: "num", text: formatValue(m.train_seconds) }));
    });
    fill(out, historyChart(jobs.slice().reverse()),
      table(["created", "job", "status", "decision", "version", ["precision@k", "num"], ["popularity", "num"],
        ["seconds", "num"]], rows,
        "history"));
    mark("history-card", "done");
  }

  // precision@k of each finished job against popularity on the same held-out data, oldest on the left
  function historyChart(jobs) {
    const points = jobs.filter((j) => j.metrics && typeof j.metrics.precision_at_k === "number");
    if (!points.length) return note("No finished job with evaluation metrics yet.");
    const width = 640, height = 170, left = 44, right = 28, top = 12, bottom = 26;
    const values = points.flatMap((j) => [j.metrics.precision_at_k, j.metrics.baseline_precision_at_k])
      .filter((v) => typeof v === "number");
    const high = Math.max(...values, 0.01) * 1.15;
    const x = (i) => left + (points.length === 1 ? (width - left - right) / 2
      : (i * (width - left - right)) / (points.length - 1));
    const y = (v) => top + (height - top - bottom) * (1 - v / high);
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
      "aria-label": "precision at k of recent retrain jobs" });
    for (let t = 0; t <= 4; t += 1) {
      const v = (high * t) / 4;
      chart.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: left - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, v.toFixed(3)));
    }
    const line = (key, cls) => {
      const coords = points.map((j, i) => [x(i), j.metrics[key]]).filter(([, v]) => typeof v === "number");
      if (coords.length > 1) {
        chart.append(svg("polyline", { points: coords.map(([px, v]) => `${px},${y(v)}`).join(" "), class: cls }));
      }
    };
    line("baseline_precision_at_k", "baseline");
    line("precision_at_k", "model");
    points.forEach((job, i) => {
      const m = job.metrics;
      const kind = job.decision === "rejected" ? "rejected" : "published";
      chart.append(svg("circle", { cx: x(i), cy: y(m.precision_at_k), r: 4.5, class: `point ${kind}` },
        svg("title", {}, `${formatTime(job.created_at)} · ${job.decision || job.status} · precision@k ` +
          `${formatValue(m.precision_at_k)}${m.rejected_because ? ` · ${m.rejected_because}` : ""}`)));
      if (typeof m.baseline_precision_at_k === "number") {
        chart.append(svg("circle", { cx: x(i), cy: y(m.baseline_precision_at_k), r: 3, class: "point baseline" }));
      }
      if (points.length <= 12 || i % Math.ceil(points.length / 12) === 0) {
        const d = new Date(job.created_at * 1000);
        chart.append(svg("text", { x: x(i), y: height - 8, class: "tick", "text-anchor": "middle" },
          `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`));
      }
    });
    const legend = el("div", { class: "legend" },
      el("span", { class: "swatch model" }), "model precision@k (held out)",
      el("span", { class: "swatch baseline" }), "popularity, same held-out data",
      el("span", { class: "swatch rejected" }), "rejected by the gate");
    return el("figure", { class: "chart-box" }, chart, legend);
  }

  function setupRetrain() {
    $("retrain-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const message = $("retrain-message");
      clear(message);
      const button = $("retrain-start");
      button.disabled = true;
      let started;
      try {
        started = await api("/retrain", { method: "POST", json: { force: $("retrain-force").checked }, admin: true });
      } catch (err) {
        fill(message, errorBox(err));
        button.disabled = false;
        return;
      }
      if (!started.created) fill(message, note("A retrain was already queued or running: following that one."));
      try {
        await followJob(started.job_id);
      } finally {
        button.disabled = false;
      }
    });
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function followJob(jobId) {
    $("job").hidden = false;
    $("job-id").textContent = jobId;
    const status = $("job-status");
    const detail = $("job-detail");
    const show = (text) => {
      status.textContent = text;
      status.className = `badge status-${text}`;
      status.dataset.status = text;
    };
    show("queued");
    clear(detail);
    let job;
    for (;;) {
      try {
        job = await api(`/retrain/${segment(jobId)}`, { admin: true });
      } catch (err) {
        fill(detail, errorBox(err));
        if (err.status === 401 || err.status === 403 || err.status === 404) return;
        await sleep(2000);
        continue;
      }
      show(job.status);
      if (job.status === "succeeded" || job.status === "failed") break;
      fill(detail, job.progress || "waiting for a trainer");
      await sleep(700);
    }
    loadHistory();
    if (job.status === "failed") {
      fill(detail, errorBox(new ApiError(0, "failed", job.error || "the job failed")));
      return;
    }
    const m = job.metrics || {};
    if (!job.version) {
      fill(detail, `${job.decision}: `, m.rejected_because || "not published", "; the serving model is unchanged");
      return;
    }
    fill(detail, `${job.decision}: version `, el("code", { text: job.version }),
      " published; waiting for this worker to load it…");
    // every worker swaps within WATCH_INTERVAL; poll until the one answering us serves the new version
    for (let k = 0; k < 60; k += 1) {
      const model = await loadModelInfo();
      if (model && model.version === job.version) {
        fill(detail, `${job.decision}: now serving `, el("code", { text: job.version }));
        refreshStatus();
        return;
      }
      await sleep(500);
    }
    fill(detail, `${job.decision}: version `, el("code", { text: job.version }),
      " published, but this worker has not loaded it yet (see /ready)");
  }

  // ------------------------------------------------------------------ start

  function start() {
    setupToken();
    setupUserForm();
    setupItemForm();
    setupRetrain();
    for (const link of document.querySelectorAll(".tabs a")) {
      link.addEventListener("click", (event) => {
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        go(new URLSearchParams({ view: link.dataset.view }));
      });
    }
    window.addEventListener("popstate", route);
    refreshStatus();
    setInterval(refreshStatus, 10000);
    route();
  }

  start();
}());
