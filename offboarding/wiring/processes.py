"""Helpers for the processes the service and the local directory start (Linux: prctl, /proc)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_PROC = Path("/proc")


# Ports handed out for servers we start lie below Linux's ephemeral range (32768-60999): the
# kernel gives those to outgoing connections, which can take a port between the moment it is
# chosen and the moment the server binds it.
_SERVER_PORTS = (20000, 32000)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range."""
    for _attempt in range(200):
        port = random.randrange(*_SERVER_PORTS)  # noqa: S311 - not a secret
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now, or None when it could.

    Binds the way uvicorn does (SO_REUSEADDR), so a port held only by closed connections
    counts as free and one another process listens on does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child get SIGKILL when the thread that started it ends.

    libc is loaded here, in the parent: the child, between fork and exec, only calls it.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return in_child


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a child started with start_new_session=True, and everything in its group."""
    if process.poll() is not None:
        kill_process_group(process.pid)  # what it started may outlive it
        return
    # The Prefect runner does not always act on the first SIGTERM: escalate.
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    kill_process_group(process.pid)


def kill_process_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in the process group `pgid`."""
    found: list[int] = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_until_gone(pgid: int, timeout: float) -> bool:
    """True once no live process is left in the group (killed ones must be reaped first)."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def environment_has(pid: int, name: str, value: str) -> bool:
    """Whether the process was started with `name=value` in its environment."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in environ.split(b"\0")


def exclusive_lock(path: Path) -> IO[str] | None:
    """Lock `path` for as long as the returned file stays open; None when another process holds it.

    The lock file names the holder's pid (see `lock_holder`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def lock_holder(path: Path) -> str:
    """The pid written by whoever holds the lock, or "?"."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
