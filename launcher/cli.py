"""``hubbub``: run the whole platform (``up``) or one part of it.

Settings come from ``HUBBUB_*`` environment variables and an optional ``hubbub.toml``;
``hubbub up --help`` lists them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from client import chat
from config import Settings, configure_logging, load_settings
from config.settings import CONFIG_FILE_ENV, ENV_PREFIX
from hubbub.errors import SettingsError
from launcher.platform import run_api, run_broker, run_up

__all__ = ["main"]

_COMMANDS: dict[str, tuple[str, Callable[[Settings], Coroutine[Any, Any, None]]]] = {
    "up": ("the whole platform in one process: broker, API, MQTT over WebSocket", run_up),
    "broker": ("the MQTT broker alone (TCP, and WebSocket on broker_ws_port)", run_broker),
    "api": ("the REST API alone", run_api),
}


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
        return chat.main(rest)
    if rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level)
    _, run = _COMMANDS[args.command]
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(run(settings))
    except SettingsError as exc:
        print(f"hubbub: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
