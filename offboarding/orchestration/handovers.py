"""Which waiting runs the dispatcher handed their input (a decision, "all attested"), and
when a hand-over that did not get through may be tried again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy.engine import Engine

from approvals.handover import record_outcome
from approvals.ports import RunResumer

# seconds before trying a failed hand-over again, after the 1st, 2nd, ... failure (the last
# one repeats): Prefect answered it busy, slowly or not at all
RETRY_DELAYS = (5.0, 15.0, 30.0, 60.0)


@dataclass
class Handovers:
    """Keyed by suspension (`<run id>:<state id>`): a run that waits again has a new key."""

    delays: tuple[float, ...] = RETRY_DELAYS
    _done: set[str] = field(default_factory=set)
    _failed: dict[str, tuple[int, float]] = field(default_factory=dict)  # failures, not before

    def due(self, pause: str, now: float) -> bool:
        """Not handed over yet, and not waiting out a failed attempt."""
        if pause in self._done:
            return False
        failures = self._failed.get(pause)
        return failures is None or now >= failures[1]

    def resumed(self, pause: str) -> None:
        self._done.add(pause)
        self._failed.pop(pause, None)

    def failed(self, pause: str, now: float) -> bool:
        """Note a hand-over that did not get through; True for the first failure of this
        suspension (the one worth recording: the rest are attempts at the same thing)."""
        count = self._failed.get(pause, (0, 0.0))[0]
        delay = self.delays[min(count, len(self.delays) - 1)]
        self._failed[pause] = (count + 1, now + delay)
        return count == 0


async def hand_over(
    gateway: RunResumer,
    handovers: Handovers,
    pause: str,
    run_input: dict[str, Any],
    *,
    engine: Engine,
    case_id: str,
    details: dict[str, Any],
    in_thread: Callable[[Callable[[], object]], Awaitable[object]],
) -> None:
    """Resume the run asleep in `pause` with `run_input`, as the dispatcher does. One that did
    not get through is tried again on a later pass (see `Handovers`); recorded as pending
    once, and as resumed when it got through. `in_thread` runs the database write."""
    run_id = pause.split(":", 1)[0]
    resumed = await gateway.resume(run_id, run_input, wait_seconds=0)
    if resumed:
        handovers.resumed(pause)
    elif not handovers.failed(pause, asyncio.get_running_loop().time()):
        return
    await in_thread(
        partial(
            record_outcome,
            engine,
            case_id=case_id,
            flow_run_id=run_id,
            resumed=resumed,
            actor="dispatcher",
            details=details,
        )
    )
