"""The HR system's side of the intake contract: build and send a signed event (used by
`offboarding hris send`, the demo, the benchmarks and the tests)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime

import httpx

from offboarding.intake.hris import SIGNATURE_HEADER, sign


def termination_event(
    *,
    employee_id: str,
    email: str,
    display_name: str,
    requested_by: str,
    last_working_day: date | None = None,
    urgent: bool = False,
    manager_id: str | None = None,
) -> dict[str, object]:
    return {
        "id": f"evt-{uuid.uuid4().hex[:16]}",
        "type": "employee.terminated",
        "occurred_at": datetime.now(UTC).isoformat(),
        "employee": {
            "id": employee_id,
            "email": email,
            "display_name": display_name,
            "manager_id": manager_id or requested_by,
        },
        "last_working_day": (last_working_day or date.today()).isoformat(),
        "urgent": urgent,
        "requested_by": requested_by,
    }


def send_event(*, base_url: str, secret: str, event: dict[str, object]) -> httpx.Response:
    body = json.dumps(event).encode()
    return httpx.post(
        f"{base_url.rstrip('/')}/hris/events",
        content=body,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)},
        timeout=30,
    )
