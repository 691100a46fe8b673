"""HR-system webhook adapters: a vendor's notification, authenticated and parsed, as a Notice.

Personio and AFAS Profit both send *dataless* notifications (see each module): they say which
person (Personio) or dossier item (AFAS) changed, not the leaver's e-mail, name or last working
day. An adapter therefore yields a `Notice` (event id, when, whose), and `termination_event`
completes it from the people directory the intake already trusts (e-mail, display name) and
from the webhook's URL (`requested_by`, `urgent`), which the HR administrator sets once per
webhook in the vendor. Problems name the vendor's field (`("body", "payload", "id")`), never
its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from connectors.base import Person
from offboarding.intake.hris import TerminationEvent


@dataclass(frozen=True)
class Notice:
    """What a vendor notification says: an offboarding starts for `employee_id`."""

    event_id: str  # vendor-prefixed, stable across the vendor's retries
    occurred_at: datetime
    employee_id: str
    last_working_day: date | None = None  # the vendor's own; else the day it occurred
    urgent: bool = False  # the vendor says so (AFAS: instant dismissal)


class VendorPayloadError(Exception):
    """The authenticated body is not the vendor's documented format; answer 422."""

    def __init__(self, problems: list[dict[str, Any]], event_id: str | None = None) -> None:
        super().__init__("; ".join(".".join(map(str, p["loc"])) for p in problems))
        self.problems = problems
        self.event_id = event_id


class Unmappable(Exception):
    """An authentic notification that cannot name an employee without a vendor lookup."""

    def __init__(self, message: str, event_id: str | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


def problem(*loc: str, msg: str, kind: str = "missing") -> dict[str, Any]:
    """One 422 problem in FastAPI's shape, located in the vendor's body."""
    return {"type": kind, "loc": ["body", *loc], "msg": msg}


def text_field(data: Any, *loc: str, max_length: int = 200) -> str | None:
    """`data[loc...]` as a non-empty string (numbers accepted: AFAS ids are numbers)."""
    value: Any = data
    for key in loc:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    found = str(value).strip()
    return found[:max_length] if found else None


def timestamp_field(data: Any, *loc: str) -> datetime | None:
    raw = text_field(data, *loc)
    if raw is None:
        return None
    try:
        # AFAS sends 7 fractional digits ("...56.1351565Z"); Python takes at most 6
        head, dot, rest = raw.partition(".")
        if dot:
            digits = "".join(c for c in rest if c.isdigit())
            raw = f"{head}.{digits[:6]}{rest[len(digits) :]}"
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def termination_event(
    notice: Notice, person: Person, *, requested_by: str, urgent: bool, zone: ZoneInfo
) -> TerminationEvent:
    """The service's own event: the leaver's address and name from the people directory,
    the last working day the vendor's, or else the day the HR system recorded the leaving
    (company timezone); urgent when the webhook URL or the vendor says so."""
    return TerminationEvent.model_validate(
        {
            "id": notice.event_id,
            "type": "employee.terminated",
            "occurred_at": notice.occurred_at,
            "employee": {
                "id": notice.employee_id,
                "email": person.email,
                "display_name": person.display_name,
            },
            "last_working_day": notice.last_working_day
            or notice.occurred_at.astimezone(zone).date(),
            "urgent": urgent or notice.urgent,
            "requested_by": requested_by,
        }
    )
