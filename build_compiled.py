"""The broker's per-message hot path, compiled with mypyc: which modules, and their build.

Why: a chat message crosses the MQTT framing, the per-connection handler, routing and the
messaging core's ingest and fan-out, all pure Python; ``hubbub up`` spent most of its CPU per
delivered message in their bytecode (docs/bench/analysis.md). These modules are typed
(mypy --strict), so mypyc compiles them to C extensions unchanged: attribute access on their
slotted classes, their calls to each other and their int/bytes arithmetic become C.

Each module is built in place: ``codec.cpython-311-x86_64-linux-gnu.so`` beside ``codec.py``,
which the import system then loads instead of the source (one shared library at the top,
``<hash>__mypyc...so``, holds the code of all of them). ``make install`` runs this after
installing the lock file's dependencies (mypy brings mypyc, setuptools drives the C compiler),
and again whenever one of the sources changes; ``make interpreted`` removes the build, and
the same code runs from source. What a compiled module does differently from its source: it
checks argument and attribute types at run time (a wrong type raises ``TypeError``), and its
classes cannot be monkeypatched or given attributes they do not declare. A compiled class must
not subclass an untyped (``Any``) base such as amqtt's errors: mypyc would lay it out wrongly and
the process would crash, so mypy (``disallow_subclassing_any``) refuses it outside the two
interpreted modules that need it (pyproject.toml). And an exception is dearer compiled than
interpreted (each compiled frame it leaves adds a traceback entry built from scratch): keep
raising off the per-packet path, as ``handler.py`` does at the end of each read.

Usage: ``python build_compiled.py`` (build), ``--sources`` (the list, for make), ``--clean``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig
from pathlib import Path

__all__ = ["MODULES", "ROOT", "build", "clean", "compiled_files", "stale_modules"]

ROOT = Path(__file__).resolve().parent

# The per-packet and per-message path, in the order a message crosses it. A module belongs here
# if it runs for every packet or message (or every connect) and compiles without contortions;
# the rest of the platform (API, the message stores, push providers) stays interpreted.
MODULES = (
    "broker_plugins/codec.py",  # framing and encoding of every packet after CONNECT
    "broker_plugins/limits.py",  # the size check on every packet
    "broker_plugins/handler.py",  # the per-connection packet loop
    "broker_plugins/qos_flows.py",  # the acknowledgement of each QoS 1/2 PUBLISH, and QoS 2's exchange
    "broker_plugins/output.py",  # one write per connection per event-loop turn
    "broker_plugins/sessions.py",  # in-flight QoS 1 messages of each session
    "broker_plugins/subscriptions.py",  # who receives a topic
    "broker_plugins/routing.py",  # delivery to each recipient
    "broker_plugins/broker.py",  # a device's publish to the core, the core's to_inbox
    "broker_plugins/keepalive.py",  # the deadlines each connection is watched by
    "messaging/ingest.py",  # validation, rate, membership and stamping of each send
    "messaging/membership.py",  # the members of a conversation, cached
    "messaging/fanout.py",  # the events of each committed message to each member
    "messaging/core.py",  # the seam between the MQTT server and ingest / fan-out
    "messaging/clock.py",  # the time each send is stamped and rate-limited with
    "hubbub/envelope.py",  # the send's parsing and the message classes
    "hubbub/topics.py",  # topic names built and parsed per message
    "hubbub/ids.py",  # the Snowflake of each message
    # The commit's way after ingest (hubbub up's process, and its SQLite writer's).
    "hubbub/event_builders.py",  # the message and ack events of each message
    "persister/local_log.py",  # the accepted queue each message is put on and taken from
    "persister/persister.py",  # the commit and deliver stages of each batch
    "persister/commit_process.py",  # a batch to the writer process and back, and its serving loop
    "persister/sql_commit.py",  # seqs, rows and results of each message of a batch
    "hubbub/push_feed.py",  # each commit's results on their way to the push planner
    "notifier/planner.py",  # who of each message's members is offline
    "messaging/presence.py",  # which members are online, asked per message by the planner
    # A device's connect: each CONNECT's decoding and token check, each SUBSCRIBE's ACL.
    "broker_plugins/connect.py",
    "broker_plugins/auth.py",
    "broker_plugins/acl.py",
    "hubbub/tokens.py",  # a new token's signature and claims checked, a known one looked up
    "hubbub/futures.py",  # a store's answer passed on to the CONNECT's step
)

_BUILD_DIR = ROOT / ".cache" / "mypyc"  # generated C and object files (git-ignored)
_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")  # ".cpython-311-x86_64-linux-gnu.so"
_PACKAGES = sorted({Path(module).parts[0] for module in MODULES})


def compiled_files() -> list[Path]:
    """Every extension module built here: one beside each compiled source, the shared library at the top."""
    found = [*ROOT.glob(f"*__mypyc{_SUFFIX}")]
    for package in _PACKAGES:
        found += (ROOT / package).rglob(f"*{_SUFFIX}")
    return sorted(found)


def stale_modules() -> list[str]:
    """Compiled modules whose source changed after their build (the import would load the old code)."""
    stale = []
    for extension in compiled_files():
        source = extension.with_name(extension.name.removesuffix(_SUFFIX) + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            stale.append(str(source.relative_to(ROOT)))
    return stale


def clean() -> None:
    """Remove every compiled module: the sources run interpreted again."""
    for extension in compiled_files():
        extension.unlink()


def build() -> None:
    """Compile ``MODULES`` in place; what was compiled before and is no longer listed is removed."""
    _check_toolchain()
    from mypyc.build import mypycify  # noqa: PLC0415 - only a build needs mypy and setuptools
    from setuptools import Distribution  # noqa: PLC0415

    os.chdir(ROOT)  # mypyc names modules by their paths relative to the working directory
    clean()
    # Not ``setup()``: it would read pyproject.toml's [project] table, which describes the wheel.
    distribution = Distribution(
        {
            "name": "hubbub-compiled",
            "ext_modules": mypycify(list(MODULES), target_dir=str(_BUILD_DIR / "c")),
            "script_name": Path(__file__).name,
            "script_args": [
                "build_ext",
                "--inplace",
                f"--parallel={os.cpu_count() or 1}",  # the small per-module stubs compile side by side
                f"--build-temp={_BUILD_DIR / 'temp'}",
                f"--build-lib={_BUILD_DIR / 'lib'}",
            ],
        }
    )
    distribution.parse_command_line()
    distribution.run_commands()
    # Copied in place with the build's times kept; a module whose C did not change keeps an old
    # time, which would look stale next to a source edited since: every module is new now.
    for extension in compiled_files():
        extension.touch()


def _check_toolchain() -> None:
    """Fail early, saying what to install, when the C toolchain or Python's headers are missing."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    missing = []
    if shutil.which(compiler.split()[0]) is None:
        missing.append(f"a C compiler ({compiler.split()[0]}; Debian: apt-get install gcc)")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        missing.append(f"Python's headers ({include}/Python.h; Debian: apt-get install python3-dev)")
    if missing:
        raise SystemExit(
            "cannot compile the hot path: missing " + " and ".join(missing) + ". "
            "Install them, or run interpreted: make interpreted (see README.md)."
        )


def main() -> None:
    """Build, list the sources or clean, as asked on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--sources", action="store_true", help="print the compiled sources (for make)")
    action.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    if args.sources:
        sys.stdout.write(" ".join(MODULES) + "\n")
    elif args.clean:
        clean()
    else:
        build()


if __name__ == "__main__":
    main()
