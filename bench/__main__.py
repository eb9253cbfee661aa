"""Command line: ``python -m bench relay|presence ...`` for one scenario, ``python -m bench all`` for all.

Each (broker, size) gets a freshly started broker, so one run's leftovers (sessions, queues,
TIME_WAIT sockets on its port) cannot skew the next. A failed run is reported and the others go
on; every broker process the harness started is stopped before it exits, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path

from bench.brokers import BrokerUnderTest, ExternalTarget, Mosquitto, StockAmqtt, close_quietly
from bench.loadgen import LoadParams
from bench.presence_storm import CLIENTS, GRACE_S, insert_section, presence_markdown, run_presence
from bench.relay import RelayError, RelayResult, run_relay
from bench.report import Failure, markdown, plot
from bench.suite import SuiteOptions, run_suite, write_suite

BUILTIN = {"amqtt": StockAmqtt, "mosquitto": Mosquitto}


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, comma-separated")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Hubbub MQTT benchmark harness")
    sub = parser.add_subparsers(dest="scenario", required=True)
    relay = sub.add_parser("relay", help="S subscribers on their own exact topics, one publisher round-robin")
    relay.add_argument(
        "--sizes", type=_sizes, default=[100, 1000], help="subscriber counts, e.g. 100,1000,10000"
    )
    relay.add_argument(
        "--brokers",
        default="amqtt,mosquitto",
        help="built-in brokers to start: amqtt, mosquitto ('' for none)",
    )
    relay.add_argument(
        "--target", action="append", default=[], metavar="HOST:PORT[,USERNAME,PASSWORD-COMMAND]",
        help="an already running loopback broker; {i} in USERNAME / the command is the client index",
    )  # fmt: skip
    relay.add_argument(
        "--target-topic", default="bench/{i}", help="topic template for --target ({i}, {username})"
    )
    relay.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE:FACTORY",
        help="a callable returning a BrokerUnderTest (e.g. the project's broker with JWT logins)",
    )  # fmt: skip
    relay.add_argument("--duration", type=float, default=10.0, help="publishing seconds per run")
    relay.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds at the start")
    relay.add_argument("--window", type=int, default=500, help="messages in flight")
    relay.add_argument("--payload-size", type=int, default=64, help="bytes per message (>= 16)")
    relay.add_argument("--qos", type=int, choices=(0, 1), default=0)
    relay.add_argument("--workers", type=int, default=2, help="load-generator processes")
    relay.add_argument("--connect-concurrency", type=int, default=100, help="handshakes in progress at once")
    relay.add_argument("--connect-deadline", type=float, default=240.0, help="seconds allowed for ramp-up")
    relay.add_argument("--keepalive", type=int, default=120, help="MQTT keepalive seconds (pings at half)")
    relay.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        help="seconds without any delivery before the window is written off",
    )
    relay.add_argument("--out", type=Path, help="write the Markdown report here")
    relay.add_argument("--plots-dir", type=Path, help="write PNG plots here (needs matplotlib)")
    suite = sub.add_parser(
        "all", help="relay, chat 1:1, groups, idle connections, presence storm, profile: docs/benchmarks.md"
    )
    suite.add_argument("--sizes", type=_sizes, default=[100, 1000, 10_000], help="relay subscriber counts")
    suite.add_argument("--duration", type=float, default=8.0, help="seconds per measured run")
    suite.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds at the start of each")
    suite.add_argument(
        "--connections", type=_sizes, default=[10_000, 50_000], help="idle connections, e.g. 10000,50000"
    )
    suite.add_argument("--presence-clients", type=int, default=CLIENTS, help="devices in the presence storm")
    suite.add_argument("--out", type=Path, help="write the Markdown report here")
    suite.add_argument("--plots-dir", type=Path, help="write PNG plots here (needs matplotlib)")
    presence = sub.add_parser(
        "presence", help="presence storm: every device drops and reconnects at once (section 5)"
    )
    presence.add_argument("--clients", type=int, default=CLIENTS, help="devices, one per user")
    presence.add_argument(
        "--grace", type=float, default=GRACE_S, help="HUBBUB_PRESENCE_GRACE_S of the broker under test"
    )
    presence.add_argument("--workers", type=int, default=2, help="device processes")
    presence.add_argument("--concurrency", type=int, default=100, help="handshakes in progress at once")
    presence.add_argument("--out", type=Path, help="write the section alone here")
    presence.add_argument(
        "--into", type=Path, help="replace section 5 of this report (e.g. docs/benchmarks.md) in place"
    )
    return parser


def _load_plugin(spec: str) -> BrokerUnderTest:
    module_name, _, attr = spec.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    broker = factory()
    if not isinstance(broker, BrokerUnderTest):
        raise TypeError(f"{spec} returned {type(broker).__name__}, not a BrokerUnderTest")
    return broker


def _brokers(args: argparse.Namespace) -> list[BrokerUnderTest]:
    names = [n.strip() for n in args.brokers.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise SystemExit(f"unknown broker(s) {unknown}; built-in: {sorted(BUILTIN)}")
    brokers: list[BrokerUnderTest] = [BUILTIN[n]() for n in names]
    for k, spec in enumerate(args.target):
        name = "target" if len(args.target) == 1 else f"target{k + 1}"
        try:
            brokers.append(ExternalTarget(spec, topic_template=args.target_topic, name=name))
        except (ValueError, OSError) as exc:
            raise SystemExit(f"--target {spec!r}: {exc}") from exc
    brokers.extend(_load_plugin(spec) for spec in args.plugin)
    if not brokers:
        raise SystemExit("nothing to benchmark: give --brokers, --target or --plugin")
    return brokers


def _run_one(broker: BrokerUnderTest, size: int, params: LoadParams) -> RelayResult | Failure:
    try:
        host, port = broker.start()
        return run_relay(broker, host, port, size, params)
    except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        sys.stderr.write(f"[{broker.name} {size}] FAILED: {exc}\n")
        return Failure(broker.name, size, str(exc) or type(exc).__name__)
    finally:
        close_quietly(broker)


def relay(args: argparse.Namespace, argv: list[str]) -> int:
    """Run every (broker, size), print the table, write the report and plots if asked."""
    params = LoadParams(
        duration=args.duration,
        warmup=args.warmup,
        window=args.window,
        payload_size=args.payload_size,
        qos=args.qos,
        workers=args.workers,
        connect_concurrency=args.connect_concurrency,
        connect_deadline=args.connect_deadline,
        keepalive=args.keepalive,
        stall_timeout=args.stall_timeout,
    )
    brokers = _brokers(args)
    results: list[RelayResult] = []
    failures: list[Failure] = []
    try:
        for size in args.sizes:
            for broker in brokers:
                outcome = _run_one(broker, size, params)
                if isinstance(outcome, RelayResult):
                    results.append(outcome)
                else:
                    failures.append(outcome)
    finally:
        for broker in brokers:
            close_quietly(broker)
    versions = {b.name: b.version() for b in brokers}
    text = markdown(results, failures, params, "python -m bench " + shlex.join(argv), versions)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        sys.stderr.write(f"wrote {args.out}\n")
    if args.plots_dir is not None:
        written = plot(results, args.plots_dir)
        sys.stderr.write(
            "".join(f"wrote {p}\n" for p in written) if written else "matplotlib not installed: no plots\n"
        )
    return 0 if results and not failures else 1


def _presence(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the storm, print section 5, write it alone (``--out``) or into a report (``--into``)."""
    command = "python -m bench " + shlex.join(argv)
    try:
        result = run_presence(args.clients, args.grace, args.workers, args.concurrency)
    except (RelayError, RuntimeError, OSError, ValueError, TimeoutError) as exc:
        sys.stderr.write(f"[presence] FAILED: {exc}\n")
        return 1
    text = "\n".join(presence_markdown([result], command)) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        sys.stderr.write(f"wrote {args.out}\n")
    if args.into is not None:
        args.into.write_text(insert_section(args.into.read_text(), presence_markdown([result], command)))
        sys.stderr.write(f"wrote section 5 of {args.into}\n")
    return 0 if result.held and result.phases[0].published == 0 else 1


def _all(args: argparse.Namespace, argv: list[str]) -> int:
    options = SuiteOptions(
        sizes=tuple(args.sizes),
        duration=args.duration,
        warmup=args.warmup,
        connections=tuple(args.connections),
        presence_clients=args.presence_clients,
    )
    results = run_suite(options)
    write_suite(results, options, "python -m bench " + shlex.join(argv), args.out, args.plots_dir)
    return 0 if results.relay and not results.failures and not results.errors else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    try:
        if args.scenario == "all":
            return _all(args, argv)
        if args.scenario == "presence":
            return _presence(args, argv)
        return relay(args, argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: workers and brokers stopped\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
