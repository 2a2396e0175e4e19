"""HTTP benchmark: GET /recommend/<id> through gunicorn next to a trivial Flask JSON endpoint.

Both run under the same gunicorn config (same workers and threads) on the same machine, loaded by
wrk at 1, 16 and 64 connections. The ratio of their throughputs is the figure of merit (target
>= 0.6 at 16 connections, with p99 < 10 ms). Each pair of runs is repeated (``--repeat``, the two
endpoints alternating) and the median is reported with the range, because single runs on a shared
2-core machine vary by +-15%. Each run prints the user cache's hit rate (from /metrics); at 16
connections the service also runs with USER_CACHE_SIZE=0 (Redis read on every request).
``--tail N`` (issue 16's tail target) runs N alternating pairs of 16-connection runs, trivial endpoint
then /recommend, after giving every demo user 5 interactions written after the model's training snapshot,
so that every request folds them in (FOLD_IN on, the most expensive answer), and reports each pair's
p99 ratio (target: /recommend's p99 <= 2x the trivial p99 of the same pair, in every pair).
``--tail N --rate R`` paces every connection (wrk's ``delay()``, whole ms: each of the 16 connections
waits round(16,000 / R) ms before each request, plus the answer's own time) so that both endpoints get about the same R req/s below
saturation: at saturation a closed loop's latency is connections / throughput (Little's law), so there
p99 follows the CPU cost of a request; at an equal moderate rate it shows what stalls would (a pause of
the request threads lengthens every answer caught in it, whatever the load).
``--result-cache off`` runs the tail check with RESULT_CACHE=false (every request computes its ranking;
by default repeats of a user's request are answered from its user-cache entry, and the table says how
often). The tail check also writes a PNG of both endpoints' p50 and p99 per pair.
``--bounds`` adds a bench-only variant at 16 connections (bench/bound_app.py) with the user record
and the model's answer memoised: what Flask, parsing, metrics and JSON alone cost. Needs `wrk`
(Debian: apt-get install wrk).

    .venv/bin/python bench/bench_http.py [--duration 10] [--repeat 3] [--connections 1,16,64] [--bounds]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


import requests

from recommender.bootstrap import ensure_demo_data
from benchlib import bench_redis
from recommender.settings import Settings
from recommender.store import RedisFeatureStore
from recommender.training import Trainer
from recommender.launch import start_gunicorn

NO_CACHE = "GET /recommend, USER_CACHE_SIZE=0"
BOUND = "bound: Redis and model memoised"
# Both endpoints are driven by the same wrk request() function (a random user id per request), so the
# load generator, which shares the two cores, costs the same for both: with a static request wrk is
# ~5% cheaper per request, which the trivial endpoint alone used to get.
LUA = """
math.randomseed(%(seed)d)
request = function()
  local u = math.random(1, %(users)d)
  return wrk.format("GET", "%(before)s" .. u .. "%(after)s")
end
"""

# --rate: each of the 16 connections waits this many ms before each request (wrk's delay() hook, which
# takes whole milliseconds)
PACED = """
delay = function()
  return %(delay)d
end
"""


def delay_ms(rate: float) -> int:
    """The whole milliseconds each of the 16 connections waits before a request for about ``rate`` req/s
    in all (plus the answers' own time, so a little less)."""
    return max(1, round(16_000.0 / rate))


def parse_wrk(text: str) -> dict:
    """Requests/s, p50/p99 in ms, and error counts from wrk --latency output."""
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        out[f"p{pct}"] = ms(*m.groups()) if m else float("nan")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    out["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    return out


def run_wrk(url: str, connections: int, duration: int, script: str | None) -> dict:
    """One wrk run."""
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    if script:
        cmd += ["-s", script]
    text = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(text)


def main() -> int:
    """Set up Redis, data, a model and two gunicorns; run wrk; print, write markdown and a PNG."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3, help="runs per endpoint and connection count (median)")
    p.add_argument("--connections", default="1,16,64")
    p.add_argument("--bounds", action="store_true", help="also serve bench/bound_app.py (16 conns)")
    p.add_argument("--tail", type=int, default=0, help="only the tail check: N pairs at 16 connections, fold-in "
                                                       "on every request")
    p.add_argument("--rate", type=float, default=0.0, help="with --tail: pace both endpoints at about this "
                                                             "many req/s in all (0: as fast as they answer)")
    p.add_argument("--reco-app", default=None, help="with --tail: serve /recommend from this WSGI app instead of "
                                                    "the service's (bench/lean_app.py: the service without Flask)")
    p.add_argument("--result-cache", choices=("on", "off"), default="on",
                   help="with --tail: RESULT_CACHE of the /recommend service (off: every request computes its "
                        "ranking, fold-in included)")
    p.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    p.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", "2")))
    p.add_argument("--redis-url", default=None, help="use this Redis (keys under a random bench: prefix)")
    p.add_argument("--out", default="var/reports/bench_http",
                   help="report path without suffix (var/reports/...; pass docs/bench_http to update the docs)")
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    redis_server, url = bench_redis(tmp, args.redis_url)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=url, redis_prefix=prefix, model_dir=str(tmp / "models"),
                        admin_token="bench-admin-token-0123456789").validated()
    store = RedisFeatureStore.from_url(url, prefix=prefix, socket_timeout=30)
    services = []
    try:
        print("loading demo data and training a model ...", flush=True)
        ensure_demo_data(store)
        Trainer(store, settings).train_and_publish(force=True)
        if args.tail:
            fresh_interactions(store)
        lua, ping_lua = tmp / "users.lua", tmp / "ping.lua"
        paced = LUA + PACED % {"delay": delay_ms(args.rate)} if args.tail and args.rate > 0 else LUA
        lua.write_text(paced % {"seed": 42, "users": 3000, "before": "/recommend/u", "after": "?n=10"})
        ping_lua.write_text(paced % {"seed": 42, "users": 3000, "before": "/ping?u=", "after": ""})
        fill_lua = tmp / "fill.lua"  # unpaced: the cache fill before the tail pairs reaches every user
        fill_lua.write_text(LUA % {"seed": 7, "users": 3000, "before": "/recommend/u", "after": "?n=10"})
        def start(settings=settings, **kwargs):
            return start_gunicorn(settings, tmp, args.workers, args.threads, **kwargs)

        endpoints = [("trivial /ping", start(app_spec="bench.trivial_app:app", ready_path="/ping"), str(ping_lua),
                      "/ping"),
                     ("GET /recommend", start(settings=settings.with_(result_cache=args.result_cache == "on"),
                                              **({"app_spec": args.reco_app} if args.tail and args.reco_app else {})),
                      str(lua), "/")]
        services += [e[1] for e in endpoints]
        if args.tail:
            # steady state: each worker's user cache filled once (a restart's cold cache is not the tail asked about)
            run_wrk(endpoints[1][1].base + endpoints[1][3], 16, 10, str(fill_lua))
            pairs = [(measure(endpoints[0][0], endpoints[0][1].base + endpoints[0][3], 16, args, endpoints[0][2]),
                      measure(endpoints[1][0], endpoints[1][1].base + endpoints[1][3], 16, args, endpoints[1][2]))
                     for _ in range(args.tail)]
            write_tail(pairs, args, Path(args.out + ("_tail_paced" if args.rate > 0 else "_tail")
                                         + ("_" + args.reco_app.split(":")[0].split(".")[-1] if args.reco_app else "")
                                         + ("_computed" if args.result_cache == "off" else "")))
            return 0
        connections = [int(x) for x in args.connections.split(",")]
        rows = [measure(name, service.base + path, c, args, script)
                for c in connections
                for name, service, script, path in alternate(endpoints, args.repeat)]
        if 16 in connections:  # the same service reading Redis on every request
            uncached = start(settings=settings.with_(user_cache_size=0))
            services.append(uncached)
            rows += [measure(NO_CACHE, uncached.base + "/", 16, args, str(lua)) for _ in range(args.repeat)]
        if args.bounds:
            service = start(app_spec="bench.bound_app:app")
            services.append(service)
            rows += [measure(BOUND, service.base + "/", 16, args, str(lua)) for _ in range(args.repeat)]
            service.stop()
    finally:
        for s in services:
            s.stop()
        if redis_server:
            redis_server.stop()
    write_report(rows, args, Path(args.out))
    return 0


def fresh_interactions(store, users: int = 3000, per_user: int = 5) -> None:
    """Give every demo user ``per_user`` interactions after the model's data snapshot (folded in on every
    request of that user)."""
    rng = __import__("random").Random(7)
    now = time.time()
    records = [{"user_id": f"u{u}", "item_id": f"i{rng.randint(1, 2000)}", "weight": 1.0, "timestamp": now}
               for u in range(1, users + 1) for _ in range(per_user)]
    for start in range(0, len(records), 5000):
        store.add_interactions(records[start:start + 5000])


def write_tail(pairs: list[tuple[dict, dict]], args, out: Path) -> None:
    """The tail check's table: per pair, both p50s and p99s, the p99 ratio (target <= 2x) and the throughput
    ratio; how many pairs meet the 2x target."""
    load = (f"each connection waiting {delay_ms(args.rate)} ms before each request (wrk's delay(); about "
            f"{args.rate:.0f} req/s in all, below both endpoints' saturation)" if args.rate > 0 else
            "closed loop, as fast as the endpoint answers (saturation)")
    lines = ["# Request-path tail (`bench/bench_http.py --tail" + (f" --rate {args.rate:.0f}" if args.rate > 0 else "")
             + (f" --reco-app {args.reco_app}" if args.reco_app else "") + "`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores; gunicorn {args.workers} workers x "
             f"{args.threads} threads; wrk 16 connections, {load}; {args.duration} s per run after a 2 s warm-up "
             f"(and one unpaced 10 s run of /recommend before the first pair, so that every worker's user cache is "
             f"filled); "
             f"random demo users (3,000 users x 2,000 items, weak world), each with 5 interactions written after the "
             f"model's training snapshot, so every answer folds them in (FOLD_IN=true); "
             + ("RESULT_CACHE=false: every request computes its ranking" if args.result_cache == "off" else
                "RESULT_CACHE=true: a worker computes a user's ranking once per user record and model snapshot, "
                "then answers repeats from the user's cache entry (hit rate per row)")
             + f". Load average at the end: {os.getloadavg()[0]:.2f}.", "",
             "| pair | trivial req/s | trivial p50 / p99 ms | /recommend req/s | /recommend p50 / p99 ms | "
             "req/s ratio | p99 ratio | <= 2x | result cache hits |",
             "|---:|---:|---:|---:|---:|---:|---:|:---:|---:|"]
    passed = 0
    for n, (trivial, reco) in enumerate(pairs, start=1):
        ratio = reco["p99"] / trivial["p99"]
        passed += ratio <= 2.0
        lines.append(f"| {n} | {trivial['rps']:.0f} | {trivial['p50']:.2f} / {trivial['p99']:.2f} | {reco['rps']:.0f} | "
                     f"{reco['p50']:.2f} / {reco['p99']:.2f} | {reco['rps'] / trivial['rps']:.2f} | {ratio:.2f} | "
                     f"{'yes' if ratio <= 2.0 else 'NO'} | "
                     f"{'' if reco.get('result_hit_rate') is None else format(reco['result_hit_rate'], '.1%')} |")
    lines += ["", f"{passed} of {len(pairs)} pairs within 2x."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_tail(pairs, args, out.with_suffix(".png"))


def plot_tail(pairs: list[tuple[dict, dict]], args, path: Path) -> None:
    """Per pair: both endpoints' p50 and p99, and the 2x-trivial-p99 line /recommend's p99 must stay under."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchlib import save_figure

    x = list(range(1, len(pairs) + 1))
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (name, color) in enumerate((("trivial /ping", "#999999"), ("GET /recommend", "#1f77b4"))):
        offset = [i + (k - 0.5) * 0.3 for i in x]
        ax.bar(offset, [p[k]["p99"] for p in pairs], 0.3, color=color, alpha=0.85, label=f"{name} p99")
        ax.plot(offset, [p[k]["p50"] for p in pairs], "_", color="black", ms=14, mew=2,
                label="p50" if k else None)
    ax.step([0.5] + [i + 0.5 for i in x], [2 * pairs[0][0]["p99"]] + [2 * p[0]["p99"] for p in pairs],
            where="pre", color="red", ls="--", lw=1, label="2x trivial p99 (target for /recommend)")
    load = f"paced, ~{args.rate:.0f} req/s" if args.rate > 0 else "saturation"
    cache = "result cache " + args.result_cache
    ax.set(xticks=x, xlabel="pair (trivial run, then /recommend run)", ylabel="latency (ms)",
           title=f"Request-path tail: 16 connections, {load}, fold-in, {cache}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path, f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores; gunicorn {args.workers}x"
                           f"{args.threads}; {args.duration} s runs; demo world 3,000 x 2,000; "
                           f"load {os.getloadavg()[0]:.1f}")


def alternate(endpoints: list, repeat: int) -> list:
    """The endpoints in turn, ``repeat`` times (so slow drifts of the machine hit both alike)."""
    return [e for _ in range(repeat) for e in endpoints]


def measure(name: str, url: str, connections: int, args, script: str | None) -> dict:
    """A 2 s warm-up, then one measured wrk run; prints it with the user cache's hit rate in that run."""
    run_wrk(url, connections, 2, script)
    counted = name not in (BOUND, "trivial /ping")  # the bound app memoises in front of the cache
    before = cache_lookups(url) if counted else {}
    result = run_wrk(url, connections, args.duration, script)
    after = cache_lookups(url) if counted else {}
    lookups = {k: after.get(k, 0) - before.get(k, 0) for k in ("hit", "miss", "bypass")}
    total = sum(lookups.values())
    result["hit_rate"] = lookups["hit"] / total if total else None
    hits = f"  user cache hits {result['hit_rate']:.1%}" if total else ""
    results = {k: after.get("result_" + k, 0) - before.get("result_" + k, 0) for k in ("hit", "miss")}
    result["result_hit_rate"] = results["hit"] / sum(results.values()) if sum(results.values()) else None
    hits += f", result cache hits {result['result_hit_rate']:.1%}" if result["result_hit_rate"] is not None else ""
    print(f"{name:34s} c={connections:3d}  {result['rps']:8.0f} req/s  p50 {result['p50']:6.2f} ms  "
          f"p99 {result['p99']:6.2f} ms  errors {result['socket_errors'] + result['non_2xx']}{hits}", flush=True)
    return {"endpoint": name, "connections": connections, **result}


def cache_lookups(url: str) -> dict:
    """reco_user_cache_lookups_total by result ("hit", ...) and reco_result_cache_lookups_total by result
    ("result_hit", ...), summed over the workers ({} for apps without them)."""
    base = url.split("/", 3)
    text = requests.get(f"{base[0]}//{base[2]}/metrics", timeout=5).text
    out: dict = {}
    for line in text.splitlines():
        m = re.match(r'reco_(user|result)_cache_lookups_total\{result="(\w+)"\} ([\d.e+]+)', line)
        if m:
            key = m.group(2) if m.group(1) == "user" else "result_" + m.group(2)
            out[key] = out.get(key, 0) + float(m.group(3))
    return out


def summarise(rows: list[dict]) -> dict:
    """(connections, endpoint) -> medians and ranges over the repeated runs."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["connections"], r["endpoint"]), []).append(r)
    out = {}
    for key, runs in groups.items():
        rps = [r["rps"] for r in runs]
        out[key] = {"rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
                    "p50": statistics.median(r["p50"] for r in runs), "p99": statistics.median(r["p99"] for r in runs),
                    "errors": sum(r["socket_errors"] + r["non_2xx"] for r in runs), "runs": len(runs),
                    "hit_rate": (statistics.median(r["hit_rate"] for r in runs)
                                 if all(r.get("hit_rate") is not None for r in runs) else None)}
    return out


def write_report(rows: list[dict], args, out: Path) -> None:
    """Markdown table with ratios, and a PNG of throughput and p99 per connection count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = os.getloadavg()[0]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    lines = ["# HTTP benchmark (`bench/bench_http.py`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores ({cpu}); gunicorn {args.workers} workers x "
             f"{args.threads} threads (gthread, one SO_REUSEPORT socket per worker); wrk and Redis on the same "
             f"machine; {args.duration} s per run after a 2 s warm-up, {args.repeat} runs per row (endpoints "
             f"alternating), median shown with the range of req/s; demo data (3000 users, 2000 items), random "
             f"known users, n=10 (the trivial endpoint gets the same wrk request() function, with a random query "
             f"string); a user's features and seen items come from the per-process user cache (hit rate "
             f"per row; the USER_CACHE_SIZE=0 row reads them from Redis on every request). Load average at the end: "
             f"{load:.2f}.", "",
             "| connections | endpoint | req/s (median) | range | p50 ms | p99 ms | errors | user cache hits | / trivial |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary = summarise(rows)
    by_c: dict = {}
    for (c, name), r in summary.items():
        by_c.setdefault(c, {})[name] = r
    for c, group in sorted(by_c.items()):
        trivial = group.get("trivial /ping")
        for name, r in group.items():
            ratio = f"{r['rps'] / trivial['rps']:.2f}" if trivial and name != "trivial /ping" else ""
            hit_rate = f"{r['hit_rate']:.0%}" if r.get("hit_rate") is not None else ""
            lines.append(f"| {c} | {name} | {r['rps']:.0f} | {r['rps_min']:.0f}-{r['rps_max']:.0f} | {r['p50']:.2f} | "
                         f"{r['p99']:.2f} | {r['errors']} | {hit_rate} | {ratio} |")
    lines += ["", "Targets: recommend / trivial >= 0.6 at 16 connections; p99 < 10 ms at 16 connections. "
              "Rows starting with 'bound:' are bench-only variants (bench/bound_app.py), not the service.", "",
              "Earlier runs, what limits the ratio and what was tried: [BENCHMARKS.md](BENCHMARKS.md), section HTTP."]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    conns = sorted(c for c in by_c if "GET /recommend" in by_c[c])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, color in (("trivial /ping", "#999999"), ("GET /recommend", "#1f77b4")):
        ax1.plot(conns, [by_c[c][name]["rps"] for c in conns], "o-", label=name, color=color)
        ax1.vlines(conns, [by_c[c][name]["rps_min"] for c in conns], [by_c[c][name]["rps_max"] for c in conns],
                   color=color, lw=2, alpha=0.5)
        ax2.plot(conns, [by_c[c][name]["p99"] for c in conns], "o-", label=name, color=color)
    for name, marker, color in ((NO_CACHE, "s", "#d62728"), (BOUND, "^", "#2ca02c")):
        if name in by_c.get(16, {}):
            ax1.plot([16], [by_c[16][name]["rps"]], marker, label=name, color=color, alpha=0.8)
    ax1.set(xscale="log", xlabel="connections", ylabel="requests/s", title="Throughput")
    ax2.set(xscale="log", yscale="log", xlabel="connections", ylabel="p99 latency (ms)", title="p99 latency")
    ax2.axhline(10, ls="--", color="red", lw=0.8, label="10 ms target")
    for ax in (ax1, ax2):
        ax.set_xticks(conns, [str(c) for c in conns])
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
