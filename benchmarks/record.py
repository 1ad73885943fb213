"""One JSON record per benchmark run under benchmarks/results/: the figures, the command, the commit, the
package versions and the machine, so a figure quoted anywhere can be traced to the run that produced it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "sentence-transformers", "faiss-cpu", "onnxruntime", "numpy", "tokenizers", "ray", "txtai")


def commit() -> str:
    """The commit the run was made at, with "+dirty" when the work tree differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    mem = 0
    if Path("/proc/meminfo").exists():
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"arch": platform.machine(), "cores": os.cpu_count(), "memory_mb": mem, "system": platform.system()}


def save(name: str, figures: dict, argv: list[str] | None = None) -> Path:
    """Write benchmarks/results/<name>-<UTC time>.json and return its path."""
    stamp = datetime.now(timezone.utc)
    argv = sys.argv[1:] if argv is None else argv  # run as `python -m benchmarks.X ...`: its own arguments
    record = {
        "benchmark": name,
        "date": stamp.isoformat(timespec="seconds"),
        "command": "python -m benchmarks." + name + (" " + " ".join(argv) if argv else ""),
        "commit": commit(),
        "versions": versions(),
        "machine": machine(),
        "figures": figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def latest(name: str) -> dict | None:
    """The newest record of a benchmark, or None."""
    files = sorted(RESULTS.glob(f"{name}-*.json"))
    return json.loads(files[-1].read_text()) if files else None


if __name__ == "__main__":
    print(json.dumps({"commit": commit(), "versions": versions(), "machine": machine()}, indent=2), file=sys.stdout)
