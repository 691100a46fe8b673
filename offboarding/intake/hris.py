"""The HRIS intake contract: the signed "employee terminated" and "termination cancelled"
events.

Header: `Offboarding-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
Several `v1=` values may be sent (key rotation); one valid one is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from offboarding.domain.text import safe_display

SIGNATURE_HEADER = "Offboarding-Signature"


class SignatureError(Exception):
    """The request is not provably from the HR system; answer 401."""


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The header value an HR system sends (also used by the demo and the tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    header: str | None,
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one v1 signature matches one secret within the tolerance."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError as exc:
                raise SignatureError("timestamp t= is not a number") from exc
        elif key == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t=<unix seconds> and at least one v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError("signature timestamp is too old (or in the future); resend the event")
    signed = f"{timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return
    raise SignatureError("no v1 signature matches")


class Employee(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=100)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    display_name: str = Field(min_length=1, max_length=300)
    manager_id: str | None = Field(default=None, max_length=100)

    @field_validator("display_name")
    @classmethod
    def display_name_is_visible(cls, value: str) -> str:
        """No invisible controls (bidi overrides, zero-width characters) and on one line."""
        shown = safe_display(value).strip()
        if not shown:
            raise ValueError(
                "display_name has no visible characters once control and invisible "
                "characters are removed; send the employee's name as it should be shown"
            )
        return shown


class TerminationEvent(BaseModel):
    """`employee.terminated`, as posted to `POST /hris/events`."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "evt_01J9Z6",
                    "type": "employee.terminated",
                    "occurred_at": "2026-11-24T09:30:00+01:00",
                    "employee": {
                        "id": "E1042",
                        "email": "jdevries@example.test",
                        "display_name": "Jan de Vries",
                        "manager_id": "E0007",
                    },
                    "last_working_day": "2026-11-30",
                    "urgent": False,
                    "requested_by": "E0007",
                }
            ]
        },
    )

    id: str = Field(
        min_length=1, max_length=200, description="Unique event id; resends are deduplicated."
    )
    type: Literal["employee.terminated"]
    occurred_at: datetime = Field(description="ISO 8601 with offset")
    employee: Employee
    last_working_day: date = Field(
        description="Access goes at the end of this day (company timezone)."
    )
    urgent: bool = Field(default=False, description="Instant dismissal: start at once.")
    requested_by: str = Field(
        min_length=1, max_length=100, description="Employee id of the initiator."
    )


class EmployeeRef(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=100)


class CancellationEvent(BaseModel):
    """`employee.termination_cancelled`, as posted to `POST /hris/events`: HR withdraws the
    employee's open offboarding (scheduled or waiting for approval; nothing revoked yet)."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "evt_01J9Z7",
                    "type": "employee.termination_cancelled",
                    "occurred_at": "2026-11-25T10:00:00+01:00",
                    "employee": {"id": "E1042"},
                    "requested_by": "E0007",
                    "reason": "Jan stays: the notice was withdrawn",
                }
            ]
        },
    )

    id: str = Field(
        min_length=1, max_length=200, description="Unique event id; resends are deduplicated."
    )
    type: Literal["employee.termination_cancelled"]
    occurred_at: datetime = Field(description="ISO 8601 with offset")
    employee: EmployeeRef
    requested_by: str = Field(
        min_length=1, max_length=100, description="Employee id of the person who withdraws it."
    )
    reason: str = Field(default="", max_length=2000, description="Shown in the mails.")


EVENT_TYPES: dict[str, type[TerminationEvent] | type[CancellationEvent]] = {
    "employee.terminated": TerminationEvent,
    "employee.termination_cancelled": CancellationEvent,
}
HrisEvent = TerminationEvent | CancellationEvent


class IntakeAccepted(BaseModel):
    case_id: str
    status: str
    flow_run_id: str | None = None
    scheduled_for: datetime | None = None
    # what the event did: opened, upgraded, rescheduled, cancelled, unchanged (a resend, or
    # nothing left to change)
    outcome: str = "opened"
