"""What a server said with `Retry-After`, kept for every process that talks to it.

A 429 or 503 with `Retry-After` asks the *client* to wait, and a reorganisation runs many
flow-run processes against the same SaaS app at once. The process that was told waits
itself (`connectors.http` retries after the delay); the others must not send in the
meantime either. `FileHoldOff` keeps, per server, the moment before which nothing is sent,
in a small file every process on this machine reads before it sends
(`OFFBOARDING_HOLDOFF_DIR`; the service sets it to `<home>/holdoff` for its flow runs).
Without that directory only the process that was told waits (`HoldOff`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

ENVIRONMENT = "OFFBOARDING_HOLDOFF_DIR"


class HoldOff:
    """Nothing shared: the process that was told to wait does so on its own, and pacing
    (`pace`) holds for this object's requests only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._next: dict[str, float] = {}

    def note(self, server: str, seconds: float) -> None:
        """`server` asked this process to wait `seconds` from now."""

    def wait(self, server: str, sleep: Callable[[float], None]) -> float:
        """Sleep while another process was asked to wait; returns the seconds slept."""
        return 0.0

    def pace(self, server: str, per_second: float, sleep: Callable[[float], None]) -> float:
        """Sleep until this request's turn: at most `per_second` requests to `server` per
        second (its documented rate limit); returns the seconds slept."""
        now = self._clock()
        slot = max(now, self._next.get(server, 0.0))
        self._next[server] = slot + 1.0 / per_second
        return _sleep_until(slot, now, sleep)

    @staticmethod
    def from_environment() -> HoldOff:
        folder = os.environ.get(ENVIRONMENT)
        return FileHoldOff(Path(folder)) if folder else HoldOff()


class FileHoldOff(HoldOff):
    """Shared by every process that uses `folder`: one file per server, holding the moment
    (wall clock) until which nothing is sent and the process that was told."""

    def __init__(self, folder: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.folder = folder

    def _file(self, server: str) -> Path:
        return self.folder / hashlib.sha256(server.encode()).hexdigest()[:32]

    @staticmethod
    def _read(text: str) -> tuple[float, int]:
        try:
            until, pid = text.split()
            return float(until), int(pid)
        except ValueError:
            return 0.0, 0

    def note(self, server: str, seconds: float) -> None:
        wanted = self._clock() + seconds
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self._file(server), "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # two processes told at once: the later
                handle.seek(0)
                until, _pid = self._read(handle.read())
                if wanted > until:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(f"{wanted:.3f} {os.getpid()}")

    def wait(self, server: str, sleep: Callable[[float], None]) -> float:
        try:
            until, pid = self._read(self._file(server).read_text())
        except OSError:
            return 0.0
        left = until - self._clock()
        if left <= 0 or pid == os.getpid():  # told to this process: its retry waits already
            return 0.0
        sleep(left)
        return left

    def pace(self, server: str, per_second: float, sleep: Callable[[float], None]) -> float:
        """As `HoldOff.pace`, counted across every process that uses this folder: each
        request takes the next free slot from the server's pacing file."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self._file(server).with_suffix(".pace"), "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.seek(0)
                try:
                    taken = float(handle.read() or 0)
                except ValueError:
                    taken = 0.0
                now = self._clock()
                slot = max(now, taken)
                handle.seek(0)
                handle.truncate()
                handle.write(f"{slot + 1.0 / per_second:.6f}")
        except OSError:
            return super().pace(server, per_second, sleep)  # this process's share, at least
        return _sleep_until(slot, now, sleep)


def _sleep_until(slot: float, now: float, sleep: Callable[[float], None]) -> float:
    left = slot - now
    if left <= 0:
        return 0.0
    sleep(left)
    return left
