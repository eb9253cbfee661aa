"""Start each step of ``make bench`` on a quiet machine, and say what it waited for.

Why: a step's figures are rates and CPU per unit of work on a 2-core machine, and the step
before can still be running when it returns: its processes exiting (a ``hubbub up`` and its
SQLite writer, load-generator workers, a JVM), and the kernel writing back the pages its files
dirtied (the chat steps write hundreds of MB of SQLite WAL; /tmp is a disk here). In the
fourth pass's ``make bench`` the 10,000-connection step, right after the chat runs, measured
with 29 % of the machine busy with neither the broker nor its load generator.

So before each step: (1) wait until no process the suite started is left, except
multiprocessing's own helpers (the resource tracker lives as long as the suite); (2) write the
dirty pages back now (``os.sync``) rather than during the measurement; (3) wait until the
machine's cores are idle for a moment. Each wait is bounded (a machine shared with other work
is never idle: the step then runs anyway), and what was waited for is printed, with the
busiest processes when the machine did not quieten.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Quieted", "machine_busy_s", "wait_until_quiet"]

IDLE_SHARE = 0.10  # the machine is quiet when at most this share of its cores is busy ...
IDLE_FOR_S = 1.0  # ... over this long
GONE_BOUND_S = 30.0  # at most this long for the step before's processes to exit
IDLE_BOUND_S = 20.0  # and at most this long for the machine to quieten
_SAMPLE_S = 0.5
_HELPERS = ("resource_tracker", "forkserver")  # multiprocessing's, alive for the whole run
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = 1024  # /proc/meminfo counts in kB


@dataclass(frozen=True)
class Quieted:
    """What ``wait_until_quiet`` found and how long it waited."""

    leftovers: list[str]  # processes of the step before still alive when it started waiting
    still_alive: list[str]  # ... and after the bound
    dirty_mb: float  # dirty and under-writeback page cache written back by os.sync
    waited_s: float
    busy_share: float  # of all cores, over the last sample
    busiest: list[str]  # when the machine stayed busy: who was

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"waited {self.waited_s:.1f} s"]
        if self.leftovers:
            parts.append(
                f"for {len(self.leftovers)} processes of the step before ({', '.join(self.leftovers)})"
            )
        if self.still_alive:
            parts.append(f"still alive after {GONE_BOUND_S:.0f} s: {', '.join(self.still_alive)}")
        parts.append(f"wrote back {self.dirty_mb:.0f} MB of dirty pages")
        parts.append(f"machine {self.busy_share:.0%} busy")
        if self.busiest:
            parts.append(f"not quiet after {IDLE_BOUND_S:.0f} s; busiest: {', '.join(self.busiest)}")
        return "; ".join(parts)


def wait_until_quiet(step: str) -> Quieted:
    """Before ``step``: the suite's processes gone, dirty pages written, the cores idle; bounded, printed."""
    started = time.monotonic()
    leftovers = _descendants()
    deadline = started + GONE_BOUND_S
    alive = dict(leftovers)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid: name for pid, name in _descendants().items() if pid in leftovers}
    dirty_mb = _dirty_mb()
    os.sync()
    busy, busiest = _wait_idle(time.monotonic() + IDLE_BOUND_S)
    quieted = Quieted(_labels(leftovers), _labels(alive), dirty_mb, time.monotonic() - started, busy, busiest)
    sys.stderr.write(f"[quiet before {step}] {quieted.summary()}\n")
    sys.stderr.flush()
    return quieted


def _wait_idle(deadline: float) -> tuple[float, list[str]]:
    """Sample until the cores were idle for ``IDLE_FOR_S``; the last share, and the busiest if never."""
    idle_since: float | None = None
    while True:
        processes = _process_cpu()
        before, then = machine_busy_s(), time.monotonic()
        time.sleep(_SAMPLE_S)
        now = time.monotonic()
        share = (machine_busy_s() - before) / ((now - then) * (os.cpu_count() or 1))
        if share > IDLE_SHARE:
            idle_since = None
        elif idle_since is None:
            idle_since = now - _SAMPLE_S
        if idle_since is not None and now - idle_since >= IDLE_FOR_S:
            return share, []
        if now >= deadline:
            return share, _busiest(processes, _process_cpu(), time.monotonic() - then)


def _busiest(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], elapsed_s: float
) -> list[str]:
    """The three processes busiest between two samples ``elapsed_s`` apart, as ``name[pid] NN%`` of a core."""
    used = [
        (seconds - before[pid][1], f"{name}[{pid}]")
        for pid, (name, seconds) in after.items()
        if pid in before and seconds > before[pid][1]
    ]
    return [f"{label} {spent / elapsed_s:.0%}" for spent, label in sorted(used, reverse=True)[:3]]


def _labels(processes: dict[int, str]) -> list[str]:
    return [f"{name}[{pid}]" for pid, name in processes.items()]


def _descendants() -> dict[int, str]:
    """The live processes this one started (children, theirs, ...), but multiprocessing's helpers."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":  # a zombie is gone but for its parent's wait
                continue
            parents[int(entry.name)], names[int(entry.name)] = int(fields[1]), name
    mine = {os.getpid()}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(found)
        mine |= found
    mine.discard(os.getpid())
    return {pid: names[pid] for pid in sorted(mine) if not _is_helper(pid)}


def _is_helper(pid: int) -> bool:
    with contextlib.suppress(OSError):
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        return any(helper.encode() in command for helper in _HELPERS)
    return True  # gone meanwhile


def _process_cpu() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds so far (user + system)."""
    cpu: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
            fields = stat[stat.rindex(")") + 2 :].split()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            cpu[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) * _TICK_S)
    return cpu


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; 0 where there is none."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with Path("/proc/stat").open(encoding="ascii") as stat:
            ticks = [int(field) for field in stat.readline().split()[1:]]
        idle = ticks[3] + ticks[4]  # idle, iowait
        return (sum(ticks[:8]) - idle) * _TICK_S
    return 0.0


def _dirty_mb() -> float:
    """Page cache waiting to be written back (Dirty + Writeback), in MB."""
    total_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(":")
            if name in {"Dirty", "Writeback"}:
                total_kb += int(value.split()[0])
    return total_kb / _PAGE
