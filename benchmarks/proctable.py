"""The benchmarks' view of /proc: which process is which, and the CPU each used.

Shared by `intake.py` and `reorganisation.py`; Linux only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
POSTGRESQL = "PostgreSQL (every backend on the machine)"


def kind_of(cmdline: str, pid: int, parent: str = "") -> str | None:
    """What a process under the benchmark is, from its command line (and its parent's)."""
    if pid == os.getpid():
        return "service (web app + dispatcher)"
    if "prefect server start" in cmdline or ("uvicorn" in cmdline and "prefect" in cmdline):
        return "Prefect server"
    if "worker start" in cmdline:
        return "worker"
    if "offboarding.orchestration.runner" in cmdline:
        return "runner"
    if "offboarding.wiring.web_processes" in cmdline:
        return "web process (another)"
    if "slapd" in cmdline:
        return "slapd"
    if "orchestration/warm_client.py" in cmdline:
        return "warm client (what Prefect starts)"
    if "offboarding.orchestration.warm " in cmdline:
        # a forked flow run has the starter's command line; its parent is the starter
        if "offboarding.orchestration.warm " in parent:
            return "flow run (forked, warm)"
        return "warm starter"
    if "multiprocessing" in cmdline:  # the benchmark's client: the HR system's side
        return "benchmark's HR client"
    if "prefect.engine" in cmdline or "python" in cmdline:
        return "flow run"
    return None


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def process_tree(root: int) -> list[int]:
    """`root` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (a system service, not under the benchmark)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process so far, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_by_process(root: int) -> dict[int, tuple[str, float]]:
    """Every process under `root` and PostgreSQL's: pid -> (kind, CPU seconds so far)."""
    found: dict[int, tuple[str, float]] = {}
    for pid in process_tree(root):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = command_line(parent_of(pid)) if pid != root else ""
            kind = kind_of(command_line(pid), pid, parent) or "other"
            seconds = cpu_seconds(pid)
            if seconds is not None:
                found[pid] = (kind, seconds)
    for pid in postgres_pids():
        seconds = cpu_seconds(pid)
        if seconds is not None:
            found[pid] = (POSTGRESQL, seconds)
    return found


def cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per kind between two `cpu_by_process` readings (a process born between
    them counts from zero; one that ended between them is missed)."""
    used: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        start = before.get(pid, (kind, 0.0))[1]
        used[kind] = used.get(kind, 0.0) + seconds - start
    return used
