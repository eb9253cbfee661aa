"""Turn relay results into a Markdown report and, when matplotlib is installed, two PNG plots.

Why Markdown with the command line in it: the numbers go into docs/ next to the code, and a
number nobody can reproduce is not worth keeping. Plots are optional so the harness runs on a
machine that only has the project's runtime dependencies.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.relay import OTHER_CPU_WARN

if TYPE_CHECKING:
    from pathlib import Path

    from bench.loadgen import LoadParams
    from bench.relay import RelayResult

REFERENCE = "mosquitto"


@dataclass(frozen=True)
class Failure:
    """A (broker, size) that produced no result, and why."""

    broker: str
    subscriptions: int
    reason: str


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(result: RelayResult, results: list[RelayResult]) -> str:
    ref = next(
        (r for r in results if r.broker == REFERENCE and r.subscriptions == result.subscriptions), None
    )
    if ref is None or ref.msgs_per_s <= 0:
        return "—"
    return f"{result.msgs_per_s / ref.msgs_per_s:.3f}"


def markdown(
    results: list[RelayResult],
    failures: list[Failure],
    params: LoadParams,
    command: str,
    versions: dict[str, str],
) -> str:
    """The whole report: how it was made, the summary table, then per-run details."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# MQTT relay benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Run {now} on {os.cpu_count()} cores, Python {platform.python_version()}; "
        + ", ".join(f"{name}: {v}" for name, v in versions.items())
        + ".",
        "",
        (
            f"One QoS {params.qos} publisher, round-robin over the subscribers' own exact topics, "
            f"{params.window} messages in flight, {params.payload_size}-byte payloads, "
            f"{params.duration:g} s per run of which the first {params.warmup:g} s are not measured; "
            f"{params.workers} load-generator processes. msgs/s counts messages received; latency is "
            "publish-to-receive."
        ),
        "",
        "| broker | subscriptions | msgs/s | p50 ms | p99 ms | ratio to Mosquitto |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines.extend(
        f"| {r.broker} | {r.subscriptions:,} | {r.msgs_per_s:,.0f} | {_fmt(r.p50_ms)} | "
        f"{_fmt(r.p99_ms)} | {_ratio(r, results)} |"
        for r in results
    )
    lines.extend(f"| {f.broker} | {f.subscriptions:,} | failed | | | |" for f in failures)
    lines += [
        "",
        "Run details (connect = CONNECT + SUBSCRIBE of every subscriber, bounded concurrency):",
        "",
        (
            "| broker | subscriptions | connected | connect s | connects/s | sent | received | lost | stalls "
            "| broker CPU % | generator CPU % | machine busy % |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines.extend(
        f"| {r.broker} | {r.subscriptions:,} | {r.connected:,} | {r.connect_seconds:.1f} | "
        f"{r.connect_rate:,.0f} | {r.sent:,} | {r.received:,} | {r.lost:,} | {r.stalls} | "
        f"{_fmt(r.broker_cpu_pct, 0)} | {_fmt(r.generator_cpu_pct, 0)} | {_fmt(r.machine_cpu_pct, 0)} |"
        for r in results
    )
    lines += [
        "",
        (
            "CPU % is of one core over the measured window (broker: its process; generator: all "
            f"{params.workers} worker processes). Machine busy % is of all {os.cpu_count()} cores, "
            "kernel loopback work included: near 100 % the machine, not the broker alone, is the limit."
        ),
    ]
    busy = [r for r in results if r.other_cpu_pct > OTHER_CPU_WARN]
    if busy:
        lines += [
            "",
            "Other load on the machine during: "
            + ", ".join(
                f"{r.broker} at {r.subscriptions:,} ({r.other_cpu_pct:.0f} % of a core)" for r in busy
            )
            + ". Those numbers are suspect; rerun on an idle machine.",
        ]
    lossy = [r for r in results if r.lost]
    if lossy:
        lines += [
            "",
            "Lost messages in: "
            + ", ".join(f"{r.broker} at {r.subscriptions:,} ({r.lost:,})" for r in lossy)
            + f". After each stall the publisher waited {params.stall_timeout:g} s before writing the "
            "window off, so those rates understate the broker.",
        ]
    if failures:
        lines += ["", "Failures:", ""]
        lines.extend(
            f"- {f.broker} at {f.subscriptions:,}: {f.reason.strip().splitlines()[-1]}" for f in failures
        )
    return "\n".join(lines) + "\n"


def plot(results: list[RelayResult], plots_dir: Path) -> list[Path]:
    """Write throughput-vs-subscriptions and latency-CDF PNGs; returns [] without matplotlib."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional dependency (the "bench" group)

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    brokers = sorted({r.broker for r in results})

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in brokers:
        rows = sorted((r for r in results if r.broker == name), key=lambda r: r.subscriptions)
        ax.plot([r.subscriptions for r in rows], [r.msgs_per_s for r in rows], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscriptions (one exact topic each)")
    ax.set_ylabel("messages received per second")
    ax.set_title("Relay throughput")
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend()
    throughput = plots_dir / "relay-throughput.png"
    fig.tight_layout()
    fig.savefig(throughput, dpi=120)
    plt.close(fig)

    cdf = plots_dir / "relay-latency-cdf.png"
    series = [(f"{r.broker} {r.subscriptions:,}", r.cdf_ms) for r in results]
    _cdf_plot(plt, series, "publish-to-receive latency (ms)", "Relay latency CDF", cdf)
    return [throughput, cdf]


def plot_latency_cdf(
    series: list[tuple[str, list[float]]], xlabel: str, title: str, path: Path
) -> list[Path]:
    """Write one latency-CDF PNG of ``(label, CDF points in ms)`` series; [] without matplotlib."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional dependency (the "bench" group)

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    path.parent.mkdir(parents=True, exist_ok=True)
    _cdf_plot(plt, series, xlabel, title, path)
    return [path]


def _cdf_plot(plt: Any, series: list[tuple[str, list[float]]], xlabel: str, title: str, path: Path) -> None:  # noqa: ANN401
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, cdf_ms in series:
        if cdf_ms:
            ys = [k / (len(cdf_ms) - 1) for k in range(len(cdf_ms))]
            ax.plot([max(x, 0.01) for x in cdf_ms], ys, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of messages")
    ax.set_title(title)
    ax.grid(visible=True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
