"""Plot a `fitscore-server bench --sweep` report: latency and skipped frames against cameras.

    .venv/bin/python scripts/plot_bench.py var/bench/sweep.json docs/bench_sweep.png

Needs matplotlib (a dev extra, not a runtime dependency of the server).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def plot_sweep(report: dict[str, Any], output: Path) -> None:
    """Two panels sharing the camera axis: p50/p99 frame→event latency, and skipped frames."""
    runs = sorted(report["runs"], key=lambda run: run["cameras"])
    cameras = [run["cameras"] for run in runs]
    best = report["max_realtime_cameras"]
    figure, (latency, skipped) = plt.subplots(2, 1, sharex=True, figsize=(7, 6), dpi=120)
    latency.plot(cameras, [run["latency_p50_ms"] for run in runs], "o-", label="p50")
    latency.plot(cameras, [run["latency_p99_ms"] for run in runs], "s--", label="p99")
    latency.set_ylabel("frame → event latency (ms)")
    latency.set_ylim(bottom=0)
    latency.legend(loc="upper left")
    skipped.plot(cameras, [run["skipped_pct"] for run in runs], "o-", color="tab:red")
    skipped.axhline(report["criteria"]["max_skipped_pct"], color="grey", linestyle=":")
    skipped.set_ylabel("frames skipped (%)")
    skipped.set_xlabel(f"cameras ({runs[0]['fps']} frames/s each, {runs[0]['transport']})")
    skipped.set_xticks(cameras)
    for axes in (latency, skipped):
        axes.grid(True, alpha=0.3)
        if best:
            axes.axvline(best, color="tab:green", alpha=0.5)
    skipped.annotate(
        f"largest N in real time: {best}",
        xy=(best or cameras[0], report["criteria"]["max_skipped_pct"]),
        xytext=(6, 12),
        textcoords="offset points",
        color="tab:green",
    )
    loads = ", ".join(f"{run['load_average_start'][0]:.1f}" for run in runs)
    figure.suptitle(
        f"fitscore bench sweep, {report['date'][:10]} ({runs[0]['cores']} cores; "
        f"1-min load at each run's start: {loads})",
        fontsize=9,
    )
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="JSON written by `bench --sweep --output`")
    parser.add_argument("output", type=Path, help="PNG to write")
    arguments = parser.parse_args(argv)
    plot_sweep(json.loads(arguments.report.read_text(encoding="utf-8")), arguments.output)
    print(arguments.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
