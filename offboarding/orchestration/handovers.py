"""Which waiting runs the dispatcher handed their input (a decision, "all attested"), and
when a hand-over that did not get through may be tried again."""

from __future__ import annotations

from dataclasses import dataclass, field

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
