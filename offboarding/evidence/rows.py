"""What an evidence pack holds: plain rows, already in the form the templates print.

Times are strings (UTC, to the second) so the HTML, PDF and Markdown show the same text,
and a test can compare them with the audit log's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from connectors.base import Message
from offboarding.domain.models import as_utc


def when(moment: datetime | None) -> str:
    """How the pack shows a time: UTC, to the second."""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


@dataclass(frozen=True)
class Event:
    """One audit event as the pack cites it."""

    seq: int
    at: str
    actor: str
    action: str
    outcome: str
    hash: str
    details: dict[str, Any]  # empty once the retention policy erased them
    moment: datetime  # `at` as a time, to match an erased event to its row


@dataclass(frozen=True)
class PlanVersion:
    version: int
    plan_hash: str
    hash_verified: bool  # SHA-256 over the stored canonical JSON equals plan_hash
    status: str
    created_at: str
    steps: list[dict[str, Any]]  # RevocationPlan.rows(): describe/action_label/kind_label
    erased: bool = False  # its content was erased by the retention policy (hash kept)
    instruction: str = ""  # the work instruction's version the plan followed, when recorded
    instruction_label: str = ""  # the work instruction file's own version label, when recorded
    instruction_sha256: str = ""  # and the SHA-256 of that file's bytes


@dataclass(frozen=True)
class DecisionRow:
    at: str
    actor: str
    approver_id: str
    decision: str  # approve / reject
    plan_hash: str
    plan_version: int | None
    reason: str
    seq: int | None
    signed_in_as: str = ""  # the account that proved the approver by signing in, if any


@dataclass(frozen=True)
class RefusalRow:
    at: str
    actor: str
    action: str
    outcome: str
    reasons: list[str]
    seq: int


@dataclass(frozen=True)
class StepRow:
    at: str
    actor: str
    grant: str
    label: Message
    action: str
    outcome: str
    detail: str
    seq: int


@dataclass(frozen=True)
class AttestationRow:
    step: Message
    assignee_id: str
    requested_at: str
    due_at: str
    attested_at: str  # the audit event's time; empty while open
    actor: str
    remark: str
    seq: int | None


@dataclass(frozen=True)
class CheckRow:
    connector: str
    check: str  # the catalog id
    name: str  # English, as recorded
    passed: bool
    detail: str


@dataclass(frozen=True)
class VerificationRun:
    at: str
    outcome: str
    seq: int
    checks: list[CheckRow]
    remaining: list[Message]


@dataclass(frozen=True)
class KeptRow:
    connector: str
    action: str  # keep / elsewhere
    label: Message
    detail: str
    recorded_at: str


@dataclass(frozen=True)
class Anchor:
    case_seq: int
    case_hash: str
    head_seq: int
    head_hash: str
    chain_verified: bool
    chain_events: int
    chain_problem: str


@dataclass(frozen=True)
class EvidencePack:
    case: dict[str, Any]
    trigger: dict[str, Any]
    plans: list[PlanVersion]
    decisions: list[DecisionRow]
    refusals: list[RefusalRow]
    steps: list[StepRow]
    attestations: list[AttestationRow]
    verifications: list[VerificationRun]
    kept: list[KeptRow]
    final: dict[str, Any]
    anchor: Anchor
    timeline: list[Event]
    generated_at: str
