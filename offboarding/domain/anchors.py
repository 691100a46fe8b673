"""Anchors: the audit chain's head, written down outside the database.

The hash chain (`audit.verify_chain`) proves that no event was edited, reordered or removed
from the middle, but someone who can write to the database can delete the newest rows and
leave a shorter chain that still verifies. An anchor — (seq, hash of the head, event count,
time) — kept where that person cannot reach closes the gap: every anchored row must still
exist with exactly the anchored hash. Rows appended after the newest anchor are not covered
and can be cut undetected; anchor often (see `write_anchor`).

Anchors go to sinks (`AnchorSink`): here an append-only JSON-lines file that is itself a
chain (each line carries the hash of the line before), so a line edited or removed from it is
noticed too. Each anchor is also recorded in the log as an `audit.anchored` event, which the
next anchor covers; `verify_against_anchors` checks both directions.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from offboarding.domain.audit import (
    GENESIS,
    ChainReport,
    canonical_json,
    record,
    verify_chain,
)
from offboarding.domain.models import AuditEvent, as_utc, utcnow

ANCHOR_FILE = "audit-anchors.jsonl"  # in the data dir
ANCHORED = "audit.anchored"  # the event that records an anchor in the log itself
FILE_SINK = "file"


@dataclass(frozen=True)
class Anchor:
    """What the chain looked like at one moment: its newest event's seq and hash."""

    seq: int  # 0: the log was empty
    hash: str
    count: int
    at: datetime

    @property
    def when(self) -> str:
        return f"{as_utc(self.at):%Y-%m-%d %H:%M:%S} UTC"


class AnchorSink(Protocol):
    """Somewhere outside the database that keeps anchors (a file, a Prefect artifact...)."""

    name: str  # recorded in the `audit.anchored` event

    def publish(self, anchor: Anchor) -> dict[str, Any]:
        """Store the anchor durably; return what the log should record about where it is."""
        ...


class AnchorFileError(Exception):
    """The anchor file cannot be appended to; the message names the file and what to do."""


def head(engine: Engine) -> Anchor:
    """The chain's newest event, as an anchor (for the evidence pack and other sinks)."""
    with Session(engine) as session:
        newest = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
        if newest is None:
            return Anchor(seq=0, hash=GENESIS, count=0, at=utcnow())
        count = session.exec(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.seq <= newest.seq)
        ).one()
        return Anchor(seq=newest.seq, hash=newest.hash, count=int(count), at=utcnow())


def write_anchor(engine: Engine, sink: AnchorSink, *, actor: str = "service") -> Anchor:
    """Anchor the current head in `sink`, then record an `audit.anchored` event.

    The head is read and published BEFORE the event is appended, so an anchor never covers
    its own `audit.anchored` event (it cannot: the event holds the anchor's hash); the next
    anchor does.
    """
    anchor = head(engine)
    receipt = sink.publish(anchor)
    record(
        engine,
        action=ANCHORED,
        actor=actor,
        details={"seq": anchor.seq, "hash": anchor.hash, "sink": sink.name, **receipt},
    )
    return anchor


def anchor_if_moved(engine: Engine, sink: AnchorSink, *, actor: str = "service") -> Anchor | None:
    """`write_anchor`, unless the newest event is already an `audit.anchored` one (None): for
    periodic callers, so an idle log is not anchored over and over."""
    with Session(engine) as session:
        newest = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
    if newest is not None and newest.action == ANCHORED:
        return None
    return write_anchor(engine, sink, actor=actor)


# -- the anchor file --------------------------------------------------------------------------


def line_digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass
class FileAnchorSink:
    """An append-only JSON-lines file, one anchor a line, each line chained to the one before:
    {"n": 3, "seq": 41, "hash": ..., "count": 41, "at": ..., "prev": sha256(line 2)}.
    Appends take an exclusive `flock`, are one O_APPEND write, and are fsync'd."""

    path: Path
    name: str = FILE_SINK

    def publish(self, anchor: Anchor) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until the descriptor is closed
            number, prev = self._after_last_line()
            body = {
                "n": number,
                "seq": anchor.seq,
                "hash": anchor.hash,
                "count": anchor.count,
                "at": as_utc(anchor.at).isoformat(timespec="microseconds"),
                "prev": prev,
            }
            line = canonical_json(body).encode()
            pending = memoryview(line + b"\n")
            while pending:
                pending = pending[os.write(fd, pending) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return {"file": str(self.path.resolve()), "n": number, "line": line_digest(line)}

    def _after_last_line(self) -> tuple[int, str]:
        """The next line's number and the digest of the current last line (under the lock)."""
        last = _last_line(self.path)
        if last is None:
            return 1, GENESIS
        try:
            number = int(json.loads(last)["n"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorFileError(
                f"{self.path}: the last line is not an anchor ({exc}); the file was changed or "
                "cut. `offboarding audit verify` shows what is wrong; keep the file as evidence "
                "and point `--anchors` at a new one only after that is understood."
            ) from exc
        return number + 1, line_digest(last)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(path: Path, chunk: int = 4096) -> bytes | None:
    """The file's last complete line, read from the end (the file only grows)."""
    with path.open("rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return None
        handle.seek(end - 1)
        if handle.read(1) != b"\n":
            raise AnchorFileError(
                f"{path}: the last line is incomplete; the file was cut or a write was "
                "interrupted. `offboarding audit verify` shows what is wrong."
            )
        tail = b""
        position = end - 1
        while position > 0 and b"\n" not in tail:
            start = max(0, position - chunk)
            handle.seek(start)
            tail = handle.read(position - start) + tail
            position = start
        return tail.rsplit(b"\n", 1)[-1]


@dataclass
class AnchorTrail:
    """The anchors read from one place, and what is wrong with that place."""

    anchors: list[Anchor]
    source: str  # the file, for messages
    sink: str | None = FILE_SINK  # whose `audit.anchored` events must be found in it
    exists: bool = True
    line_digests: list[str] = field(default_factory=list)  # of lines 1, 2, ...
    problems: list[str] = field(default_factory=list)


def read_anchors(path: Path) -> AnchorTrail:
    """Read an anchor file and check its own chain. Anchors from either side of the first break
    on are not used (they cannot be trusted); the break is a problem."""
    trail = AnchorTrail(anchors=[], source=str(path.resolve()), exists=path.exists())
    if not trail.exists:
        return trail
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines[-1]:
        trail.problems.append(f"anchor file {path}: its last line is incomplete (cut)")
    prev = GENESIS
    for number, line in enumerate(lines[:-1], start=1):
        try:
            body = json.loads(line)
            anchor = Anchor(
                seq=int(body["seq"]),
                hash=str(body["hash"]),
                count=int(body["count"]),
                at=datetime.fromisoformat(body["at"]),
            )
            intact = body["n"] == number and body["prev"] == prev
        except (ValueError, KeyError, TypeError):
            trail.problems.append(f"anchor file {path}: line {number} is not an anchor")
            break
        if not intact:
            trail.problems.append(
                f"anchor file {path}: its chain breaks at line {number} (it or the line before "
                "was edited, removed or inserted); anchors from the line before on are not used"
            )
            if trail.anchors:
                trail.anchors.pop()  # either side of the break may be the edited line
            break
        trail.anchors.append(anchor)
        trail.line_digests.append(line_digest(line))
        prev = line_digest(line)
    return trail


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchoredReport:
    chain: ChainReport
    head_seq: int
    anchors: int
    newest: Anchor | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    @property
    def uncovered(self) -> int:
        """Events after the newest anchor: cutting them would go unnoticed."""
        return self.head_seq - (self.newest.seq if self.newest else 0)


def verify_against_anchors(
    engine: Engine, anchors: AnchorTrail | Sequence[Anchor], chain: ChainReport | None = None
) -> AnchoredReport:
    """The chain check, plus: every anchored seq still exists with exactly the anchored hash
    (so the log was not cut back or rewritten below the newest anchor), the anchor file's own
    chain holds, and every anchor the log says it wrote to that file is in it."""
    trail = anchors if isinstance(anchors, AnchorTrail) else AnchorTrail(list(anchors), "", None)
    chain = chain or verify_chain(engine)
    problems = list(trail.problems)
    by_seq: dict[int, list[Anchor]] = {}
    for anchor in trail.anchors:
        by_seq.setdefault(anchor.seq, []).append(anchor)
    with Session(engine) as session:
        head_seq = int(session.exec(select(func.coalesce(func.max(AuditEvent.seq), 0))).one())
        wanted = sorted(seq for seq in by_seq if seq > 0)
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            found = select(AuditEvent.seq, AuditEvent.hash).where(col(AuditEvent.seq).in_(batch))
            for seq, event_hash in session.exec(found):
                for anchor in by_seq.pop(seq):
                    if anchor.hash != event_hash:
                        problems.append(
                            f"rewritten: event {seq} has hash {event_hash} but the anchor of "
                            f"{anchor.when} saw hash {anchor.hash}"
                        )
        anchored_events = (
            list(
                session.exec(
                    select(AuditEvent)
                    .where(AuditEvent.action == ANCHORED)
                    .order_by(col(AuditEvent.seq))
                )
            )
            if trail.sink is not None
            else []
        )
    for anchor in by_seq.pop(0, []):
        if anchor.hash != GENESIS:
            problems.append(f"anchor of {anchor.when}: seq 0 with a hash other than the empty log")
    beyond = [anchor for seq in by_seq for anchor in by_seq[seq] if seq > head_seq]
    if beyond:
        newest = max(beyond, key=lambda a: a.seq)
        problems.insert(
            0,
            f"truncated: the log ends at seq {head_seq} but the anchor of {newest.when} saw "
            f"seq {newest.seq} with hash {newest.hash}",
        )
    missing = sorted(seq for seq in by_seq if 0 < seq <= head_seq)
    if missing:
        problems.append(f"events {_listed(missing)} were anchored but are gone from the log")
    problems.extend(_missing_from_trail(trail, anchored_events))
    newest_anchor = max(trail.anchors, key=lambda a: a.seq, default=None)
    return AnchoredReport(chain, head_seq, len(trail.anchors), newest_anchor, problems)


def _missing_from_trail(trail: AnchorTrail, events: list[AuditEvent]) -> list[str]:
    """Anchors the log says were written to this very file but the file lacks (cut, replaced
    or deleted); checked from the log's side, so only while those events remain. A copy of
    the file elsewhere is checked on its own chain and against the log's rows only."""
    problems = []
    for event in events:
        details = json.loads(event.details)
        if details.get("sink") != trail.sink or details.get("file") != trail.source:
            continue
        number = int(details["n"])
        if not trail.exists:
            return [
                f"anchor file {trail.source} is missing, but event {event.seq} records "
                f"anchor #{number} written to it"
            ]
        if number > len(trail.line_digests) and not trail.problems:
            problems.append(
                f"anchor file {trail.source} was cut: event {event.seq} records anchor "
                f"#{number} of {as_utc(event.at):%Y-%m-%d %H:%M:%S} UTC, but the file holds "
                f"{len(trail.line_digests)}"
            )
            break
        if number <= len(trail.line_digests) and trail.line_digests[number - 1] != details.get(
            "line"
        ):
            problems.append(
                f"anchor file {trail.source}: line {number} is not the anchor event "
                f"{event.seq} recorded (the file was changed or replaced)"
            )
    return problems


def _listed(seqs: list[int]) -> str:
    shown = ", ".join(str(seq) for seq in seqs[:10])
    return shown + (f" and {len(seqs) - 10} more" if len(seqs) > 10 else "")
