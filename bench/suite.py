"""``python -m bench all``: every scenario of issue 6 in one run, one Markdown report.

Why one run: the targets are ratios (the project's broker against Mosquitto), and ratios
only mean something when both sides ran on the same machine in the same minutes.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import platform
import pstats
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bench.brokers import BrokerUnderTest, Mosquitto, StockAmqtt, SubprocessBroker, close_quietly
from bench.cassandra import CassandraRun, cassandra_markdown, run_cassandra
from bench.chat import PipelineResult, profile_chat, run_chat, run_groups
from bench.cluster import ClusterOptions, ClusterRun, cluster_markdown, run_cluster
from bench.connections import ConnectionsResult, run_connections
from bench.hubbub import HubbubBroker
from bench.loadgen import LoadParams
from bench.postgres import run_chat_on_postgres
from bench.presence_storm import PresenceResult, presence_markdown, run_presence
from bench.quiet import wait_until_quiet
from bench.relay import RelayError, RelayResult, run_relay
from bench.report import Failure, markdown, plot, plot_latency_cdf

__all__ = ["SuiteOptions", "run_suite"]

REFERENCE = "mosquitto"
ANALYSIS = Path("docs/bench/analysis.md")  # what the numbers mean, kept by hand
BASELINE = Path("docs/bench/baseline.md")  # the numbers before issue 6, kept by hand
PROFILE_LINES = 25
PIPELINE_CDF = "pipeline-latency-cdf.png"
RELAY_RATIO, FLAT_SPREAD, CHAT_RATIO, CHAT_P99_MS = 0.5, 0.10, 0.3, 50.0
KB_PER_CONNECTION, CONNECTS_PER_S, CONNECT_RATIO = 5.0, 5_000, 0.35  # issue 15


@dataclass(frozen=True)
class SuiteOptions:
    """Sizes and durations; the defaults finish well inside the 15 minutes of ``make bench``."""

    sizes: tuple[int, ...] = (100, 1000, 10_000)
    duration: float = 8.0
    warmup: float = 2.0
    pairs: int = 50
    chat_window: int = 5
    groups: int = 10
    group_members: int = 100
    group_senders: int = 2
    connections: tuple[int, ...] = (10_000, 50_000)
    presence_clients: int = 2_000
    presence_grace_s: float = 3.0  # short, so the storm's two phases fit in about half a minute
    storm_clients: int = 10_000  # issue 15's reconnect storm onto one node, at the production grace
    storm_grace_s: float = 10.0
    history_messages: int = 1_000_000
    history_pages: int = 1_000


class ProfiledHubbub(HubbubBroker):
    """The project's broker under cProfile: where its CPU goes during a relay run."""

    name = "hubbub-profiled"

    def __init__(self, output: Path) -> None:
        super().__init__()
        self.output = output

    def command(self, workdir: Path, port: int) -> list[str]:
        """``python -m cProfile -o FILE -m launcher.cli broker``: written when SIGTERM stops it cleanly."""
        del workdir, port
        return [sys.executable, "-m", "cProfile", "-o", str(self.output), "-m", "launcher.cli", "broker"]


@dataclass
class SuiteResults:
    """Everything one run measured."""

    relay: list[RelayResult] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    chat: list[PipelineResult] = field(default_factory=list)
    groups: list[PipelineResult] = field(default_factory=list)
    connections: list[ConnectionsResult] = field(default_factory=list)
    presence: list[PresenceResult] = field(default_factory=list)
    storm: PresenceResult | None = None  # the reconnect storm of issue 15 (section 5 too)
    profile: str = ""
    chat_profile: str = ""
    cassandra: CassandraRun | None = None
    postgres: tuple[PipelineResult, str] | None = None  # the chat on PostgreSQL, and its server
    cluster: ClusterRun | None = None  # section 7: the cluster of make cluster
    errors: list[str] = field(default_factory=list)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _relay(results: SuiteResults, options: SuiteOptions, params: LoadParams) -> None:
    brokers: list[BrokerUnderTest] = [Mosquitto(), StockAmqtt(), HubbubBroker()]
    for size in options.sizes:
        for broker in brokers:
            try:
                host, port = broker.start()
                results.relay.append(run_relay(broker, host, port, size, params))
            except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
                _say(f"[{broker.name} {size}] FAILED: {exc}")
                results.failures.append(Failure(broker.name, size, str(exc) or type(exc).__name__))
            finally:
                close_quietly(broker)


def _profile(params: LoadParams, size: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        output = Path(tmp) / "broker.prof"
        broker = ProfiledHubbub(output)
        try:
            host, port = broker.start()
            run_relay(broker, host, port, size, params)
        finally:
            close_quietly(broker)
        return _top(output)


def _chat_profile(options: SuiteOptions) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        output = Path(tmp) / "platform.prof"
        profile_chat(options.pairs, options.duration, options.warmup, options.chat_window, output)
        return _top(output)


def _top(output: Path) -> str:
    """The functions with the most own time in a cProfile dump."""
    if not output.exists():
        return "(no profile written)"
    text = io.StringIO()
    stats = pstats.Stats(str(output), stream=text)
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    lines = text.getvalue().splitlines()
    start = next((k for k, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line.replace(str(Path.cwd()) + "/", "") for line in lines[start:] if line.strip())


def _cassandra(results: SuiteResults, options: SuiteOptions) -> None:
    """Chat 1:1 and the history read path on one Cassandra node (section 6)."""
    results.cassandra = run_cassandra(
        pairs=options.pairs,
        duration=options.duration,
        warmup=options.warmup,
        window=options.chat_window,
        messages=options.history_messages,
        pages=options.history_pages,
    )
    results.errors += results.cassandra.errors


def _postgres(results: SuiteResults, options: SuiteOptions) -> None:
    """Chat 1:1 with history and accounts in a PostgreSQL server of its own (section 6)."""
    results.postgres = run_chat_on_postgres(
        options.pairs, options.duration, options.warmup, options.chat_window
    )


def _connections(results: SuiteResults, broker: SubprocessBroker, count: int) -> None:
    results.connections.append(run_connections(broker, count))


def _cluster(results: SuiteResults, options: SuiteOptions) -> None:
    """Section 7: the cluster's chat on one and two broker nodes, and its failovers (about 5 minutes)."""
    results.cluster = run_cluster(ClusterOptions(duration=options.duration, warmup=options.warmup))
    results.errors += results.cluster.errors


def run_suite(options: SuiteOptions) -> SuiteResults:
    """Run every scenario; a failing one is recorded and the others still run."""
    results = SuiteResults()
    params = LoadParams(duration=options.duration, warmup=options.warmup)
    _relay(results, options, params)
    steps: list[tuple[str, Callable[[], None]]] = [
        (
            "chat",
            lambda: results.chat.extend(
                run_chat(options.pairs, options.duration, options.warmup, options.chat_window)
            ),
        ),
        (
            "groups",
            lambda: results.groups.append(
                run_groups(
                    options.groups,
                    options.group_members,
                    options.group_senders,
                    options.duration,
                    options.warmup,
                    options.chat_window,
                )
            ),
        ),
        *(
            (
                f"connections {broker.name} {count:,}",
                partial(_connections, results, broker, count),
            )
            for count in options.connections
            for broker in (HubbubBroker(), Mosquitto())
        ),
        ("postgres", lambda: _postgres(results, options)),
        ("cassandra", lambda: _cassandra(results, options)),
        (
            "presence",
            lambda: results.presence.append(run_presence(options.presence_clients, options.presence_grace_s)),
        ),
        (
            "reconnect storm",
            lambda: setattr(results, "storm", run_presence(options.storm_clients, options.storm_grace_s)),
        ),
        ("cluster", lambda: _cluster(results, options)),
    ]
    for name, step in steps:
        wait_until_quiet(name)  # the step before's processes and page writeback could otherwise weigh on it
        try:
            step()
        except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
            _say(f"[{name}] FAILED: {exc}")
            results.errors.append(f"{name}: {exc}")
    wait_until_quiet("profile")
    try:
        results.profile = _profile(params, 1000)
    except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        results.errors.append(f"profile: {exc}")
    wait_until_quiet("chat profile")
    try:
        results.chat_profile = _chat_profile(options)
    except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        results.errors.append(f"chat profile: {exc}")
    return results


def _ratio(value: float, reference: float) -> str:
    return "—" if reference <= 0 or math.isnan(reference) else f"{value / reference:.2f}"


def suite_markdown(results: SuiteResults, options: SuiteOptions, command: str) -> str:
    """The whole of docs/benchmarks.md."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    relay_ref = {r.subscriptions: r.msgs_per_s for r in results.relay if r.broker == REFERENCE}
    hubbub = {r.subscriptions: r.msgs_per_s for r in results.relay if r.broker == "hubbub"}
    lines = [
        "# Benchmarks",
        "",
        (
            f"Command: `{command}` (what `make bench` runs). Run {now} on {os.cpu_count()} cores, "
            f"{_memory_gib():.0f} GiB, Python {platform.python_version()}, loopback only; the load "
            "generator runs on the same machine (2 worker processes)."
        ),
        "",
        "## Targets (issues 6 and 15), from this run",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    lines += _targets(results, relay_ref, hubbub)
    lines += ["", "## 1. Relay: pub/sub only", ""]
    relay_md = markdown(
        results.relay,
        results.failures,
        LoadParams(duration=options.duration, warmup=options.warmup),
        command,
        {},
    )
    lines += relay_md.split("\n", 4)[4].splitlines()  # drop the relay report's own title and command
    lines += [
        "",
        "![relay throughput](bench/relay-throughput.png)",
        "![relay latency CDF](bench/relay-latency-cdf.png)",
        "",
    ]
    lines += _pipeline_section(results, relay_ref)
    lines += _connections_section(results)
    lines += presence_markdown(
        [*results.presence, *([results.storm] if results.storm else [])],
        command,
        [e for e in results.errors if e.startswith(("presence:", "reconnect storm:"))],
    )
    if results.cassandra is not None or results.postgres is not None:
        sqlite_chat = next((r for r in results.chat if r.label == "max"), None)
        lines += cassandra_markdown(results.cassandra or CassandraRun(), sqlite_chat, results.postgres)
    if results.cluster is not None:
        lines += cluster_markdown(results.cluster, command)
    lines += [
        "## Where the time goes",
        "",
        (
            "cProfile of the project's broker (`python -m cProfile -m launcher.cli broker`) during a relay "
            "run at 1,000 subscriptions, top functions by own time (profiling slows it down ~2x; the shares "
            "are what matters; `compile` is start-up: migrations and SQLAlchemy)."
        ),
        "",
        "```",
        results.profile or "(no profile)",
        "```",
        "",
        (
            "cProfile of `hubbub up` during the closed-loop chat 1:1 run: its event-loop thread (its SQLite "
            "writer process is not profiled), start-up and shutdown included (`compile`, and amqtt's "
            "handler `stop`, whose own time is its wait for each connection to close)."
        ),
        "",
        "```",
        results.chat_profile or "(no profile)",
        "```",
        "",
    ]
    for kept in (ANALYSIS, BASELINE):
        if kept.exists():
            lines += [kept.read_text().rstrip(), ""]
    if results.errors:
        lines += ["## Failed steps", ""] + [f"- {e}" for e in results.errors] + [""]
    return "\n".join(lines) + "\n"


def _targets(results: SuiteResults, relay_ref: dict[int, float], hubbub: dict[int, float]) -> list[str]:
    rows = []
    ratios = {size: hubbub[size] / relay_ref[size] for size in hubbub if relay_ref.get(size)}
    if ratios:
        worst = min(ratios.values())
        shown = ", ".join(f"{size:,}: {ratio:.2f}" for size, ratio in sorted(ratios.items()))
        met = "yes" if worst >= RELAY_RATIO else "no"
        rows.append(f"| relay ≥ 0.50 x Mosquitto at every size | {shown} | {met} |")
    if len(hubbub) > 1:
        spread = max(hubbub.values()) / min(hubbub.values()) - 1
        rows.append(
            f"| relay flat within 10 % from {min(hubbub):,} to {max(hubbub):,} subscriptions | "
            f"spread {100 * spread:.0f} % | {'yes' if spread <= FLAT_SPREAD else 'no'} |"
        )
    peak = next((r for r in results.chat if r.label == "max"), None)
    half = next((r for r in results.chat if r.label == "half"), None)
    reference = max(relay_ref.values()) if relay_ref else float("nan")
    if peak is not None:
        ratio = peak.delivered_per_s / reference if not math.isnan(reference) else float("nan")
        rows.append(
            f"| chat 1:1 ≥ 0.30 x Mosquitto's relay rate | {peak.delivered_per_s:,.0f}/s = {ratio:.3f} x "
            f"{reference:,.0f} | {'yes' if ratio >= CHAT_RATIO else 'no'} |"
        )
    if half is not None:
        rows.append(
            f"| chat p99 ≤ 50 ms at half that rate | {half.p99_ms:.1f} ms at {half.offered_per_s:,.0f}/s | "
            f"{'yes' if half.p99_ms <= CHAT_P99_MS else 'no'} |"
        )
    return rows + _connection_targets(results)


def _connection_targets(results: SuiteResults) -> list[str]:
    """Issue 15: connects/s, memory per idle connection, and the reconnect storm."""
    rows = []
    mosquitto = {c.connections: c for c in results.connections if c.broker == "mosquitto"}
    for own in (c for c in results.connections if c.broker == "hubbub"):
        kib = own.bytes_per_connection / 1024
        met = "yes" if kib <= KB_PER_CONNECTION else "no"
        rows.append(f"| ≤ 5 KB broker RSS per idle connection, {own.connections:,} | {kib:.1f} KB | {met} |")
        other = mosquitto.get(own.connections)
        ratio = own.connect_rate / other.connect_rate if other and other.connect_rate else math.nan
        met = "yes" if own.connect_rate >= CONNECTS_PER_S and ratio >= CONNECT_RATIO else "no"
        rows.append(
            f"| ≥ 5,000 connects/s and ≥ 0.35 x Mosquitto, {own.connections:,} | "
            f"{own.connect_rate:,.0f}/s = {ratio:.2f} x | {met} |"
        )
    storm = results.storm
    if storm is not None:
        blip = storm.phases[0] if storm.phases else None
        calm = blip is not None and blip.reconnected == storm.clients and blip.published == 0
        rows.append(
            f"| a reconnect storm of {storm.clients:,} without a timeout or a presence flap "
            f"(grace {storm.grace_s:g} s) | "
            + (
                f"{blip.reconnected:,} back in {blip.reconnect_seconds:.1f} s, {blip.published:,} publishes"
                if blip is not None
                else "not run"
            )
            + f" | {'yes' if calm and storm.held else 'no'} |"
        )
    return rows


def _pipeline_section(results: SuiteResults, relay_ref: dict[int, float]) -> list[str]:
    del relay_ref
    lines = [
        "## 2. Chat 1:1 and 3. groups: the whole pipeline",
        "",
        (
            "`hubbub up` (broker, ingest, persister on SQLite, fan-out, acks). Devices publish "
            '`{"cmid","text"}` at QoS 1 to `conv/{cid}/send` and read `message`/`ack` events from their '
            "inbox (QoS 1). delivered/s counts `message` events received by a recipient (the sending "
            "device gets the `ack` only); latency is send to a recipient's receipt. max is a closed loop "
            "(each sender keeps a few messages unacknowledged), half an open loop at half of max. "
            "Platform CPU % is `hubbub up` and its SQLite writer process together, in % of one core."
        ),
        "",
        "| scenario | run | devices | delivered/s | p50 ms | p99 ms | sent | acked | platform CPU % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r.scenario} | {r.label} | {r.devices:,} | {r.delivered_per_s:,.0f} | {r.p50_ms:.1f} | "
        f"{r.p99_ms:.1f} | {r.sent:,} | {r.acked:,} | {r.platform_cpu_pct:.0f} |"
        for r in results.chat + results.groups
    ]
    return [*lines, "", f"![chat and groups latency CDF](bench/{PIPELINE_CDF})", ""]


def _connections_section(results: SuiteResults) -> list[str]:
    lines = [
        "## 4. Idle connections",
        "",
        (
            "Each client connects with its own login (a JWT on Hubbub), subscribes to its inbox and to a "
            "retained presence topic, receives the retained message and stays silent; a connect is counted "
            "once that message arrived. Memory is the broker's RSS growth divided by the connections. CPU "
            "per connect is the broker's and the load generator's (both workers) over the connect window; "
            "other load is the share of the cores busy with neither."
        ),
        "",
        (
            "| broker | connections | connect s | connects/s | KB per connection | broker µs/connect "
            "| generator µs/connect | other load |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {c.broker} | {c.connected:,} | {c.connect_seconds:.1f} | {c.connect_rate:,.0f} | "
        f"{c.bytes_per_connection / 1024:.1f} | {c.broker_us_per_connect:,.0f} | "
        f"{c.generator_us_per_connect:,.0f} | {c.other_load:.0%} |"
        for c in results.connections
    ]
    lines += [f"\n{c.broker}: {c.limit_note}." for c in results.connections if c.limit_note]
    return [*lines, ""]


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return float("nan")


def write_suite(
    results: SuiteResults, options: SuiteOptions, command: str, out: Path | None, plots: Path | None
) -> None:
    """Print the report, write it and the plots."""
    text = suite_markdown(results, options, command)
    sys.stdout.write(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        _say(f"wrote {out}")
    if plots is not None:
        pipeline = [(f"{r.scenario} {r.label}", r.cdf_ms) for r in results.chat + results.groups]
        written = plot(results.relay, plots) + plot_latency_cdf(
            pipeline, "send-to-receive latency (ms)", "Chat and groups latency CDF", plots / PIPELINE_CDF
        )
        for path in written:
            _say(f"wrote {path}")
