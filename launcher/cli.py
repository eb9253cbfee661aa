"""``hubbub``: run the whole platform (``up``) or one part of it.

Settings come from ``HUBBUB_*`` environment variables and an optional ``hubbub.toml``;
``hubbub up --help`` lists them.

A process that cannot start because of its surroundings — a data directory it cannot
create or write, a database it cannot open or write, a port in use — says so in one line
naming the path (or database) and the problem, and exits with 1: the traceback says
nothing more to an operator (it is logged at DEBUG).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sqlite3
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from config import Settings, configure_logging, load_settings
from config.settings import CONFIG_FILE_ENV, ENV_PREFIX
from hubbub.errors import SettingsError
from hubbub.failure_log import describe_failure

__all__ = ["main"]

logger = logging.getLogger(__name__)

Runner = Callable[[Settings], Coroutine[Any, Any, None]]
Role = Callable[[Settings], Runner]
"""A command's role: imports what runs with these settings and returns it (or refuses them).

A role's modules are imported when that role runs, not by every process: between them the
roles import FastAPI, alembic, the broker, the cluster and the chat client (about 2 s of CPU per
process start on a loaded two-core machine, a quarter of it for what a role never uses).
"""


def _up(settings: Settings) -> Runner:
    if settings.clustered:
        raise SettingsError(
            "`hubbub up` is one node; with HUBBUB_NATS_URL run `hubbub broker`, `hubbub persister`, "
            "`hubbub notifier` and `hubbub api` (several of each)"
        )
    from launcher.platform import run_up  # noqa: PLC0415 - the role's imports, when it runs

    return run_up


def _broker(settings: Settings) -> Runner:
    if settings.clustered:
        from launcher.cluster_broker import run_cluster_broker  # noqa: PLC0415 - as above

        return run_cluster_broker
    from launcher.platform import run_broker  # noqa: PLC0415 - as above

    return run_broker


def _api(settings: Settings) -> Runner:
    if settings.clustered:
        from launcher.cluster_api import run_cluster_api  # noqa: PLC0415 - as above

        return run_cluster_api
    from launcher.platform import run_api  # noqa: PLC0415 - as above

    return run_api


def _persister(settings: Settings) -> Runner:
    _refuse_one_node("persister", settings)
    from launcher.cluster_persister import run_cluster_persister  # noqa: PLC0415 - as above

    return run_cluster_persister


def _notifier(settings: Settings) -> Runner:
    _refuse_one_node("notifier", settings)
    from launcher.cluster_notifier import run_cluster_notifier  # noqa: PLC0415 - as above

    return run_cluster_notifier


def _refuse_one_node(command: str, settings: Settings) -> None:
    if not settings.clustered:
        raise SettingsError(
            f"`hubbub {command}` is a cluster process: set HUBBUB_NATS_URL (on one node `hubbub up` "
            f"and `hubbub broker` run the {command} inside)"
        )


_COMMANDS: dict[str, tuple[str, Role]] = {
    "up": ("the whole platform in one process: broker, API, MQTT over WebSocket", _up),
    "broker": (
        "the MQTT broker (TCP, and WebSocket on broker_ws_port); a cluster node with HUBBUB_NATS_URL",
        _broker,
    ),
    "api": ("the REST API alone; a cluster node with HUBBUB_NATS_URL", _api),
    "persister": (
        "a cluster's persister: commits the conversation shards it leases (needs HUBBUB_NATS_URL)",
        _persister,
    ),
    "notifier": (
        "a cluster's push notifier: pushes for the shards it leases (needs HUBBUB_NATS_URL)",
        _notifier,
    ),
}


def _imported(role: Role, settings: Settings) -> Runner:
    """``role``'s runner, its modules imported with the cyclic garbage collector off.

    An import allocates objects that live as long as the process (classes, functions, module
    dicts): the collector's passes over them meanwhile find nothing to free and cost a role's
    start-up about a tenth of its import time.
    """
    gc.disable()
    try:
        return role(settings)
    finally:
        gc.enable()


def _settings_help() -> str:
    lines = [f"settings (environment, or the same names lower-case in hubbub.toml / ${CONFIG_FILE_ENV}):"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default is not None else "(derived)"
        lines.append(f"  {ENV_PREFIX}{name.upper():<28} {field.description or ''} [default: {default}]")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubbub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("chat", help="talk as a user from this terminal (hubbub chat --help)", add_help=False)
    for name, (summary, _) in _COMMANDS.items():
        commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=_settings_help(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    return parser


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hubbub`` command."""
    args, rest = _parser().parse_known_args(argv)
    if args.command == "chat":
        from client import chat  # noqa: PLC0415 - the chat client's imports only for `hubbub chat`

        return chat.main(rest)
    if rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level)
    _, role = _COMMANDS[args.command]
    try:
        run = _imported(role, settings)
        _check_sqlite_file(settings)
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(run(settings))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        refused = _only_failure(exc)
        if isinstance(refused, SettingsError):
            print(f"hubbub: {refused}", file=sys.stderr)  # noqa: T201
            return 2
        reason = _environment_failure(exc, settings)
        if reason is None:
            raise
        logger.debug("stopped: %s", reason, exc_info=exc)
        print(f"hubbub: {reason}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


def _check_sqlite_file(settings: Settings) -> None:
    """Open a SQLite database file for writing before anything else touches it.

    A failed open inside the event loop leaves aiosqlite's thread printing tracebacks after
    the loop closed; here it is one ``sqlite3.Error`` (``OSError`` for its directory).
    """
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() != "sqlite" or url.database in {None, "", ":memory:"}:
        return
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(url.database), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")  # takes the write lock: a read-only file refuses it
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def _only_failure(exc: BaseException) -> BaseException:
    """The failure inside nested task groups that each failed of one thing only."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _environment_failure(exc: BaseException, settings: Settings) -> str | None:
    """One line for a failure of the surroundings (files, database, ports, NATS); ``None`` for a bug."""
    # Imported here, on the way out: only a cluster role raises these, and it has loaded them.
    from nats.errors import Error as NatsError  # noqa: PLC0415

    from cluster.connection import ClusterConfigError  # noqa: PLC0415

    exc = _only_failure(exc)
    if isinstance(exc, NatsError | ClusterConfigError):
        servers = settings.nats_url or "(none)"
        return f"cannot use the NATS cluster at {servers}: {exc or type(exc).__name__}"
    if isinstance(exc, FileExistsError):
        return f"cannot use {exc.filename}: it exists and is not a directory"
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else "start-up"
        return f"cannot use {where}: {exc.strerror or exc}"
    if isinstance(exc, DBAPIError | sqlite3.Error):
        database = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        return f"cannot use the database {database}: {describe_failure(exc)}"
    return None


if __name__ == "__main__":
    sys.exit(main())
