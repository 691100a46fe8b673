"""The append-only audit log: every event carries the hash of the one before it.

`record()` appends; `verify_chain()` recomputes every hash and names the first
event that was edited, deleted or reordered. Two writers racing for the same
position collide on the unique `seq`/`prev_hash` columns; the loser retries.

The chain covers a digest of each event's details, not the details themselves, so
the retention policy can erase personal data from old events (`erase_details`)
while the chain still proves that no event was changed, removed or reordered.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy import select as core_select
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from offboarding.domain.models import AuditEvent, as_utc, insert_now, utcnow

T = TypeVar("T")
GENESIS = "0" * 64
CHAIN_LOCK = 0x0FFB0A2D  # PostgreSQL advisory lock key serialising appends to the chain
ATTEMPTS = 50  # transactions that lose the race for the next position retry this often
log = structlog.get_logger(__name__)


def canonical_json(value: Any) -> str:
    """The one serialisation that hashes are computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


ERASED = canonical_json({"erased": "retention policy"})


def event_hash(event: AuditEvent) -> str:
    """SHA-256 over the event's canonical form; covers its position and its predecessor."""
    body = canonical_json(
        {
            "seq": event.seq,
            "at": as_utc(event.at).isoformat(timespec="microseconds"),
            "case_id": event.case_id,
            "actor": event.actor,
            "action": event.action,
            "outcome": event.outcome,
            "details_digest": event.details_digest,
            "prev_hash": event.prev_hash,
        }
    )
    return hashlib.sha256(body.encode()).hexdigest()


_EVENTS = AuditEvent.__table__.c  # type: ignore[attr-defined]
_LOCK_CHAIN = text("SELECT pg_advisory_xact_lock(:key)")
_HEAD = core_select(_EVENTS.seq, _EVENTS.hash).order_by(_EVENTS.seq.desc()).limit(1)


def append(
    session: Session,
    *,
    action: str,
    actor: str,
    outcome: str = "ok",
    case_id: str | None = None,
    details: dict[str, Any] | None = None,
    once_key: str | None = None,
) -> AuditEvent | None:
    """Append one event inside the caller's transaction (so it commits, or not, with the
    change it records). The caller commits; on `IntegrityError` it retries everything
    (see `is_chain_collision`). With `once_key`, an existing record of the key: None."""
    session.flush()  # rows the event refers to (a new case) are written before it
    # plain statements on the transaction's connection: no ORM entities are read here
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # one appender at a time, across processes, until this transaction ends
        connection.execute(_LOCK_CHAIN, {"key": CHAIN_LOCK})
    if once_key is not None:
        existing = connection.execute(
            core_select(_EVENTS.seq).where(_EVENTS.once_key == once_key)
        ).first()
        if existing is not None:
            return None
    head = connection.execute(_HEAD).first()
    last_seq, prev_hash = head if head is not None else (0, GENESIS)
    payload = canonical_json(details or {})
    event = AuditEvent(
        seq=last_seq + 1,
        at=utcnow(),
        case_id=case_id,
        actor=actor,
        action=action,
        outcome=outcome,
        details=payload,
        details_digest=digest(payload),
        once_key=once_key,
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = event_hash(event)
    insert_now(session, event)
    session.info.setdefault(_APPENDED, []).append(event)
    return event


_APPENDED = "offboarding.audit.appended"


def _log_committed(session: Session) -> None:
    """One log line per event that just became part of the chain (never before commit)."""
    for event in session.info.pop(_APPENDED, []):
        log.info(
            "audit", action=event.action, outcome=event.outcome, actor=event.actor, seq=event.seq
        )


def backoff(attempt: int) -> None:
    """Jittered pause before retrying a transaction that lost the race for the chain."""
    time.sleep(random.uniform(0, 0.005 * (attempt + 1)))  # noqa: S311 - jitter


def in_transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work(session)` (changes and the audit events that record them) as one
    transaction. When a concurrent writer wins a race (the chain's next position, a unique
    key) it is retried from the start, so `work` must read what it decides on."""
    last: IntegrityError | None = None
    for attempt in range(ATTEMPTS):
        with Session(engine, expire_on_commit=False) as session:
            try:
                result = work(session)
                session.commit()
            except IntegrityError as exc:
                session.rollback()
                session.info.pop(_APPENDED, None)
                last = exc
                backoff(attempt)
                continue
            _log_committed(session)
            return result
    raise RuntimeError(f"could not complete a transaction: too much contention ({last})")


def record(
    engine: Engine,
    *,
    action: str,
    actor: str,
    outcome: str = "ok",
    case_id: str | None = None,
    details: dict[str, Any] | None = None,
    once_key: str | None = None,
) -> AuditEvent | None:
    """Append one event in a transaction of its own. With `once_key`, a second record of
    the same key is skipped (None), also when two writers race for it."""
    return in_transaction(
        engine,
        lambda session: append(
            session,
            action=action,
            actor=actor,
            outcome=outcome,
            case_id=case_id,
            details=details,
            once_key=once_key,
        ),
    )


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    problem: str = ""


def verify_chain(engine: Engine) -> ChainReport:
    """Recompute the chain from the first event; stop at the first inconsistency."""
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    with Session(engine) as session:
        for event in session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))):
            count += 1
            if event.seq != expected_seq:
                return ChainReport(
                    False,
                    count,
                    event.seq,
                    f"event {expected_seq} is missing (next present is {event.seq})",
                )
            if event.prev_hash != expected_prev:
                return ChainReport(False, count, event.seq, "does not link to the event before it")
            if event.erased and event.details != ERASED:
                return ChainReport(False, count, event.seq, "it is marked erased but has details")
            if not event.erased and digest(event.details) != event.details_digest:
                return ChainReport(False, count, event.seq, "its details were changed")
            if event_hash(event) != event.hash:
                return ChainReport(False, count, event.seq, "its content was changed")
            expected_prev = event.hash
            expected_seq += 1
    return ChainReport(True, count)


def events_for_case(engine: Engine, case_id: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(AuditEvent)
                .where(AuditEvent.case_id == case_id)
                .order_by(col(AuditEvent.seq))
            )
        )


def erase_details(engine: Engine, case_id: str) -> int:
    """Remove the details (personal data) of a case's events; the chain stays verifiable."""
    with Session(engine) as session:
        events = session.exec(
            select(AuditEvent).where(
                AuditEvent.case_id == case_id, col(AuditEvent.erased).is_(False)
            )
        ).all()
        for event in events:
            event.details = ERASED
            event.erased = True
            session.add(event)
        session.commit()
        return len(events)
