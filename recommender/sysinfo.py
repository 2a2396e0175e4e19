"""What a measurement ran on: CPU, usable cores, OS and library versions (for reports and benchmarks)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, str]:
    """cpu, cores, os, python and the numeric libraries' versions, as strings."""
    import lightfm
    import numpy as np
    import pandas as pd

    return {"cpu": cpu_name(), "cores": str(usable_cores()), "os": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "pandas": pd.__version__,
            "lightfm": getattr(lightfm, "__version__", "?")}
