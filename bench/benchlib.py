"""Helpers shared by the benchmark scripts: waiting for a quiet machine, printing aligned tables."""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the project root (reports and plots go to ROOT/docs)
QUIET_LOAD = 1.5


def wait_for_quiet(limit: float = QUIET_LOAD, tries: int = 10, pause: float = 30.0) -> tuple[float, bool]:
    """Wait (up to tries x pause seconds) for the 1-minute load average to drop below ``limit``."""
    for attempt in range(tries):
        load = os.getloadavg()[0]
        if load < limit:
            return load, True
        if attempt < tries - 1:
            print(f"load average (1 min) {load:.2f} >= {limit}: waiting {pause:.0f} s "
                  f"({attempt + 1}/{tries}) ...", flush=True)
            time.sleep(pause)
    load = os.getloadavg()[0]
    print(f"load average still {load:.2f}: running anyway (numbers are noisier)", flush=True)
    return load, False


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows under a header, text columns left-aligned and numbers right-aligned, a gap between groups."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            print()
        prev = r[0]
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def report_paths(out: str) -> tuple[Path, Path]:
    """(png, md) for an --out PNG path: made absolute, its directory created, the .md beside it."""
    png = Path(out)
    if not png.is_absolute():
        png = Path.cwd() / png
    png.parent.mkdir(parents=True, exist_ok=True)
    return png, png.with_suffix(".md")


def bench_redis(tmp: Path, url: str | None):
    """(server, url): a private redis-server under ``tmp`` when no URL is given (server None otherwise)."""
    from recommender.localredis import LocalRedis

    if url:
        return None, url
    server = LocalRedis(tmp / "redis").start()
    return server, server.url


def save_figure(fig, path, footer: str) -> None:
    """The benchmark plots' common ending: a small grey footer (machine, versions, load), layout, PNG."""
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.01, footer, fontsize=7.5, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def machine_lines(info: dict, args) -> list[str]:
    """Report lines on the machine and the load around a run (args.load_start/load_end/quiet)."""
    load = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
    return ["Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + ".", "",
            f"Load average (1, 5, 15 min): {load(args.load_start)} at the start "
            f"({'quiet' if args.quiet else 'NOT quiet: other jobs were running'}), {load(args.load_end)} at the end."]
