"""``python -m bench.cluster``: Hubbub as a cluster (issue 12, "Measure it"), section 7 of the report.

What it runs, on what ``make cluster`` starts (``bench.cluster_target``: NATS x3 with JetStream
replicated x3, PostgreSQL with durable commits, two broker nodes, two persisters, a notifier
and two API processes):

- ``kill -9`` of broker-1 holding N devices (first, on a fresh node: its RSS growth per device
  is then theirs alone): until all are connected to broker-2 (the next node their login listed,
  with the access token they hold) and caught up with ``GET /v1/sync``; broker-1 is then started
  again (``--broker-failover-only``: this step alone);
- chat 1:1 and 100-member groups (``bench.chat``'s devices and load generator) with every device
  on broker-1, then the same load with the devices spread over broker-1 and broker-2 (each pair's
  two members, and every other member of a group, on different nodes): delivered/s, p50/p99
  send-to-receive, and CPU per delivered message of each kind of process, from ``/proc``;
- ``kill -9`` of the persister owning a conversation's shard: until the lease moves, and until
  the new owner's first commit reaches the sender (``bench.cluster_persister``).

Why the one-node run is a cluster too: the difference between the two runs is the cost of the
hops between nodes (a message accepted on one node, committed by a persister, fanned out to the
node of each recipient), on the same processes. The single-process figures (``hubbub up``) are
sections 2 and 3. Two cores run every process here and the load generator: figures and ratios,
no thresholds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.chat import PipelineResult, _groups, _measure, _pairs
from bench.cluster_failover import BrokerFailover, run_broker_failover
from bench.cluster_persister import PersisterFailover, run_persister_failover
from bench.cluster_target import PLAN, ClusterTarget, start_cluster
from bench.relay import RelayError
from launcher.local_servers import StartFailed

__all__ = ["SECTION_TITLE", "ClusterRun", "cluster_markdown", "insert_cluster_section", "main", "run_cluster"]

SECTION_TITLE = "## 7. Cluster: broker nodes, persisters and notifiers on NATS JetStream"
TWO_NODES = 2
IDLE_S = 5.0
KINDS = ("broker", "persister", "notifier", "api", "nats", "postgresql")


@dataclass(frozen=True)
class ClusterOptions:
    """Sizes and durations (the defaults take about five minutes on two busy cores)."""

    pairs: int = 50
    window: int = 5
    groups: int = 10
    group_members: int = 100
    group_senders: int = 2
    duration: float = 8.0
    warmup: float = 2.0
    failover_devices: int = 2_000
    broker_failover_only: bool = False  # skip the idle reading, the chat runs and the persister's kill


@dataclass(frozen=True)
class ClusterChat:
    """One chat run on the cluster, and the CPU seconds each kind of process spent in its window."""

    nodes: int
    result: PipelineResult
    cpu_s: dict[str, float]
    measured_s: float

    def us_per_message(self, kind: str) -> float:
        """CPU microseconds of ``kind`` per delivered message."""
        delivered = self.result.delivered_per_s * self.measured_s
        return 1e6 * self.cpu_s.get(kind, 0.0) / delivered if delivered else float("nan")


@dataclass
class ClusterRun:
    """Everything one run measured."""

    chat: list[ClusterChat] = field(default_factory=list)
    persister: PersisterFailover | None = None
    broker: BrokerFailover | None = None
    idle_cpu_pct: dict[str, float] = field(default_factory=dict)  # each kind, the cluster idle
    started_s: float = 0.0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _kind(name: str) -> str:
    return next((kind for kind in KINDS if name.startswith(kind)), name)


def _window_cpu(target: ClusterTarget) -> dict[str, float]:
    before, after = target.readings[-2], target.readings[-1]
    spent: dict[str, float] = {}
    for name, value in after.items():
        spent[_kind(name)] = spent.get(_kind(name), 0.0) + value - before.get(name, value)
    return spent


def _idle_cpu(target: ClusterTarget) -> dict[str, float]:
    """CPU % of one core of each kind while nothing happens: heartbeats, lease renewals, NATS's own."""
    target.cpu_seconds()
    time.sleep(IDLE_S)
    target.cpu_seconds()
    return {kind: 100 * seconds / IDLE_S for kind, seconds in _window_cpu(target).items()}


def _restart_broker(target: ClusterTarget) -> None:
    """Broker-1 again after its kill (same settings and node name, a new port), for the chat runs."""
    target.brokers[0].restart()
    target.mqtt_host, target.mqtt_port = target.brokers[0].ready.mqtt


def _chat_runs(target: ClusterTarget, options: ClusterOptions, run: ClusterRun) -> None:
    pairs = _pairs(target, options.pairs)
    groups = _groups(target, options.groups, options.group_members, options.group_senders)
    loads = [("chat", "max", pairs), ("groups", f"{options.groups}x{options.group_members}", groups)]
    for scenario, label, devices in loads:
        for nodes in (1, TWO_NODES):
            _say(f"[cluster {scenario}] {len(devices):,} devices on {nodes} broker node(s)")
            result = _measure(
                target,
                devices,
                scenario=scenario,
                label=f"{label}, {nodes} node{'s' if nodes > 1 else ''}",
                duration=options.duration,
                warmup=options.warmup,
                window=options.window,
                endpoints=target.endpoints(nodes),
            )
            chat = ClusterChat(nodes, result, _window_cpu(target), options.duration - options.warmup)
            run.chat.append(chat)


def run_cluster(options: ClusterOptions) -> ClusterRun:
    """Start the cluster, run every measurement (a failing one is recorded), stop it."""
    run = ClusterRun()
    began = time.monotonic()
    try:
        target = start_cluster()
    except StartFailed as exc:
        _say(f"[cluster] did not start: {exc}")
        run.errors.append(f"cluster start: {str(exc)[:2000]}")
        return run
    run.started_s = time.monotonic() - began
    try:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("idle", lambda: run.idle_cpu_pct.update(_idle_cpu(target))),
            (
                "broker failover",
                lambda: setattr(run, "broker", run_broker_failover(target, options.failover_devices)),
            ),
            ("broker restart", lambda: _restart_broker(target)),
            ("chat", lambda: _chat_runs(target, options, run)),
            ("persister failover", lambda: setattr(run, "persister", run_persister_failover(target))),
        ]
        if options.broker_failover_only:
            steps = [step for step in steps if step[0] == "broker failover"]
        for name, step in steps:
            try:
                step()
            except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
                _say(f"[cluster {name}] FAILED: {exc}")
                run.errors.append(f"cluster {name}: {exc}")
    finally:
        target.stop()
    run.elapsed_s = time.monotonic() - began
    return run


def _chat_table(run: ClusterRun) -> list[str]:
    lines = [
        "| scenario | devices | delivered/s | p50 ms | p99 ms | sent | acked | CPU % (all processes) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for chat in run.chat:
        r = chat.result
        lines.append(
            f"| {r.scenario} {r.label} | {r.devices:,} | {r.delivered_per_s:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.sent:,} | {r.acked:,} | {r.platform_cpu_pct:.0f} |"
        )
    lines += [
        "",
        (
            "CPU per delivered message, in microseconds of one core, by kind of process (brokers: both "
            "nodes; NATS: the three servers; PostgreSQL: postmaster and backends):"
        ),
        "",
        "| scenario | " + " | ".join(KINDS) + " | total |",
        "| --- | " + " | ".join("---:" for _ in KINDS) + " | ---: |",
    ]
    for chat in run.chat:
        cells = [f"{chat.us_per_message(kind):,.0f}" for kind in KINDS]
        total = sum(chat.us_per_message(kind) for kind in KINDS)
        row = " | ".join([chat.result.scenario + " " + chat.result.label, *cells, f"{total:,.0f}"])
        lines.append(f"| {row} |")
    if run.idle_cpu_pct:
        idle = " | ".join(f"{run.idle_cpu_pct.get(kind, 0.0):.1f} %" for kind in KINDS)
        lines.append(f"| idle, CPU % of one core | {idle} | {sum(run.idle_cpu_pct.values()):.1f} % |")
    ratios = []
    for scenario in ("chat", "groups"):
        one, two = (
            next((c.result for c in run.chat if c.result.scenario == scenario and c.nodes == nodes), None)
            for nodes in (1, TWO_NODES)
        )
        if one and two and one.delivered_per_s:
            ratios.append(
                f"{scenario}: two nodes deliver {two.delivered_per_s / one.delivered_per_s:.2f} x the "
                f"one-node rate, p99 {two.p99_ms:.0f} ms against {one.p99_ms:.0f} ms"
            )
    return [*lines, "", *(f"- {ratio}" for ratio in ratios), ""]


def _per(seconds: float | None, count: int) -> str:
    """CPU milliseconds per item, or what is missing."""
    if seconds is None or not count:
        return "n/a"
    return f"{1e3 * seconds / count:.1f} ms"


def _failover_table(run: ClusterRun) -> list[str]:
    lines = ["| failover | figure |", "| --- | --- |"]
    if run.persister is not None:
        p = run.persister
        rows = [
            (
                f"persister `kill -9` (shard {p.shard}, {p.old_owner} → {p.new_owner}): lease moved",
                p.lease_moved_s,
            ),
            ("… first commit of the shard by the new owner (first ack after the move)", p.first_commit_s),
            ("… longest send-to-ack of a message sent around the kill", p.longest_wait_s),
        ]
        lines += [f"| {what} | {seconds:.1f} s |" for what, seconds in rows]
    if run.broker is not None:
        b = run.broker
        cells = [
            (
                f"broker `kill -9` holding {b.devices:,} devices: last device saw its connection end",
                f"{b.detected_s:.2f} s",
            ),
            (
                f"… all {b.reconnected:,} connected and subscribed on the next node their login listed",
                f"{b.all_connected_s:.1f} s ({b.connects_per_s:,.0f} connects/s)",
            ),
            (
                "… one reconnection's CONNECT + SUBSCRIBE (TCP set-up included), p50; p99",
                f"{b.connect_p50_s * 1e3:,.0f} ms; {b.connect_p99_s * 1e3:,.0f} ms",
            ),
            (
                (
                    f"… all {b.synced:,} caught up (`GET /v1/sync` returned the {b.missed} messages their "
                    f"group got meanwhile; {b.syncs:,} syncs); half of them by"
                ),
                f"{b.all_synced_s:.1f} s; {b.p50_synced_s:.1f} s",
            ),
            (
                f"… `GET /v1/sync` by the {PLAN.apis} API processes: rate; one sync's wait, p50, p99",
                f"{b.syncs_per_s:,.0f}/s; {b.sync_p50_s * 1e3:,.0f} ms; {b.sync_p99_s * 1e3:,.0f} ms",
            ),
            (
                (
                    "… CPU from the kill to the last catch-up: the surviving broker per reconnection; the "
                    "API per sync; PostgreSQL per device; NATS (three servers) per device"
                ),
                (
                    f"{_per(b.cpu_s.get('broker'), b.reconnected)}; {_per(b.cpu_s.get('api'), b.syncs)}; "
                    f"{_per(b.cpu_s.get('postgresql'), b.synced)}; {_per(b.cpu_s.get('nats'), b.synced)}"
                ),
            ),
            ("… first device connected elsewhere", f"{b.first_connected_s:.1f} s"),
            (
                "… discovery requests (`GET /v1/brokers`, asked once every listed node failed); refreshes",
                f"{b.discoveries:,}; none",
            ),
            (
                "broker-1's memory per device held, its inbox subscription included",
                f"{b.kb_per_connection:.1f} KB",
            ),
        ]
        if b.errors:
            cells.append((f"… devices that failed (first: {b.errors[0][:120]})", str(len(b.errors))))
        lines += [f"| {what} | {figure} |" for what, figure in cells]
    return [*lines, ""]


def cluster_markdown(run: ClusterRun, command: str) -> list[str]:
    """Section 7 of docs/benchmarks.md."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION_TITLE,
        "",
        (
            f"Command: `{command}` (also a step of `python -m bench all`), run {now}, "
            f"{run.elapsed_s / 60:.1f} minutes of which {run.started_s:.0f} s starting the cluster. What "
            "`make cluster` starts (launcher/devcluster.py): three NATS servers (JetStream, streams and "
            f"buckets replicated x3), PostgreSQL with its durable defaults, {PLAN.brokers} broker nodes, "
            f"{PLAN.persisters} persisters, {PLAN.notifiers} notifier and {PLAN.apis} API processes, "
            f"{PLAN.conversation_shards} conversation shards. The chat load is section 2's and 3's "
            '(closed loop, 5 unacknowledged per sender); "1 node" puts every device on broker-1, '
            '"2 nodes" puts each pair\'s members (and every other group member) on different nodes.'
        ),
        "",
        *_chat_table(run),
        *_failover_table(run),
        (
            "Reading these: ten server processes (two brokers, two persisters, a notifier, two APIs, "
            "three NATS servers) plus PostgreSQL and the two load-generator processes share two cores, "
            "so the two-node figure shows what the hops cost (accepted stream, persister, fan-out over "
            "`hubbub.inbox.<uid>` to the recipient's node), not how the cluster scales. The closed loop "
            "is bound by the latency of each shard's turn (fetch from the accepted stream, durable "
            "commit, publish to the committed stream, fan-out, ack), not by one process's CPU, so at "
            "these rates every persister batch and stream operation carries only a few messages: the "
            "CPU per message is an upper bound. On a bigger machine (a core per process), a broker "
            "node's part is its column above, so delivered messages grow with broker nodes; what adding "
            "brokers does not spread is the NATS and persister columns (each stream has one leader; one "
            "persister per shard), which is where a cluster pays for fault tolerance with CPU, against "
            "~0.1 ms per message for `hubbub up` on PostgreSQL (section 6). docs/capacity.md sizes a "
            "50-million-user deployment from these columns. In the broker failover each device "
            "does what `client.connection` does: after a jittered wait (up to 0.5 s) it connects to the "
            "next broker node its login listed with the access token it holds, so no refresh (a durable "
            "token rotation) and no registry round trip stand between the kill and the reconnect; "
            "`GET /v1/brokers` (read from the registry in memory) only once every listed node failed. "
            "The generator keeps at most 100 MQTT connects (two processes x 50) and 16 REST requests "
            "(2 x 8) in flight, each generator process on its own API process (as a balancer spreads "
            "them), its REST on a keep-alive HTTP/1.1 client of its own (`bench.cluster_http`: with "
            "httpx, its pool's bookkeeping took both generator processes' whole cores until 2026-11-27). "
            "What is left is the surviving broker's CONNECT rate (sections 4 and 5) and the API "
            "processes answering the syncs: the two rows above say which."
        ),
        "",
    ]
    if run.errors:
        lines += [*(f"- failed: {error}" for error in run.errors), ""]
    return lines


def insert_cluster_section(document: str, section: list[str]) -> str:
    """Replace section 7 of ``document``, or put it before "Where the time goes" (else at the end)."""
    lines = document.splitlines()
    if SECTION_TITLE in lines:
        start = lines.index(SECTION_TITLE)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    else:
        start = next(
            (k for k, line in enumerate(lines) if line.startswith("## Where the time goes")), len(lines)
        )
        end = start
    return "\n".join([*lines[:start], *section, *lines[end:]]) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.cluster [--into docs/benchmarks.md]``."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.splitlines()[0])
    defaults = ClusterOptions()
    parser.add_argument("--pairs", type=int, default=defaults.pairs, help="1:1 conversations")
    parser.add_argument("--groups", type=int, default=defaults.groups, help="groups of 100")
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds per chat run")
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help="unmeasured seconds of each")
    parser.add_argument("--devices", type=int, default=defaults.failover_devices, help="on the killed broker")
    parser.add_argument(
        "--broker-failover-only", action="store_true", help="only the broker node's kill -9 (about a minute)"
    )
    parser.add_argument("--into", type=Path, help="replace section 7 of this report (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    options = ClusterOptions(
        pairs=args.pairs,
        groups=args.groups,
        duration=args.duration,
        warmup=args.warmup,
        failover_devices=args.devices,
        broker_failover_only=args.broker_failover_only,
    )
    try:
        run = run_cluster(options)
    except KeyboardInterrupt:
        _say("interrupted: the cluster is stopped")
        return 130
    section = cluster_markdown(run, "python -m bench.cluster " + shlex.join(argv))
    sys.stdout.write("\n".join(section) + "\n")
    if args.into is not None:
        args.into.write_text(insert_cluster_section(args.into.read_text(), section))
        _say(f"wrote section 7 of {args.into}")
    return 0 if (run.chat or options.broker_failover_only) and not run.errors else 1


if __name__ == "__main__":
    sys.exit(main())
