"""Personio (API v2 webhooks): `person.deleted` starts an offboarding.

What Personio documents (developer.personio.de, "Webhooks" reference and "Create new
webhook" `POST /v2/webhooks`):
- delivery: HTTPS POST, JSON `{"company_id", "event_name", "occurred_at", "payload", "meta"}`
  (`company_id`, `occurred_at`, `payload`, `event_name` required); acknowledged with 2xx within
  3 s; retried on timeout or 5xx for up to 3 days; redirects are not followed.
- authentication: the webhook's `token`, set when the webhook is created; "the callback will
  include this exact value in the Authorization header". Personio documents no HMAC over the
  body, so this adapter checks that shared secret (constant-time compare) and nothing more:
  the body is not signed, and TLS is what keeps it intact.
- events are "dataless notifications" (no personal data): `person.created`, `person.updated`,
  `person.deleted` (e.g. "employee attrition"), `employment.*`. The person's id is read from
  `payload.id` — check this against a delivery from your tenant (the Webhooks Events API,
  `GET /v2/webhooks/{id}/events`, lists what was sent).

Mapping: `payload.id` → employee id (must be the people directory's employee id);
`occurred_at` → occurred_at and last working day (its date, company timezone); the event id
is `personio:<company_id>:person.deleted:<payload.id>` — the documented envelope carries no
event id, and a person is deleted once, so retries and fast-attempts land on one case.
Other event names are acknowledged and ignored.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence

from offboarding.intake.adapters import (
    Notice,
    VendorPayloadError,
    problem,
    text_field,
    timestamp_field,
)
from offboarding.intake.hris import SignatureError

NAME = "personio"
TOKEN_HEADER = "Authorization"  # noqa: S105 - a header name
OFFBOARDING_EVENTS = frozenset({"person.deleted"})


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> None:
    """Raise SignatureError unless the Authorization header is exactly a configured token."""
    del body  # Personio does not sign the body
    sent = headers.get(TOKEN_HEADER)
    if not sent:
        raise SignatureError(f"missing {TOKEN_HEADER} header (the webhook's token)")
    if not any(hmac.compare_digest(sent.encode(), s.encode()) for s in secrets if s):
        raise SignatureError(f"{TOKEN_HEADER} is not the configured Personio webhook token")


def parse(body: bytes) -> Notice | None:
    """The notice in a `person.deleted` delivery; None for events that start nothing."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise VendorPayloadError([problem(msg="not JSON", kind="json_invalid")]) from exc
    if not isinstance(data, dict):
        raise VendorPayloadError([problem(msg="not a JSON object", kind="object_type")])
    event_name = text_field(data, "event_name")
    if event_name is not None and event_name not in OFFBOARDING_EVENTS:
        return None
    company_id = text_field(data, "company_id")
    person_id = text_field(data, "payload", "id", max_length=100)
    occurred_at = timestamp_field(data, "occurred_at")
    problems = []
    if event_name is None:
        problems.append(problem("event_name", msg="Field required"))
    if company_id is None:
        problems.append(problem("company_id", msg="Field required"))
    if person_id is None:
        problems.append(problem("payload", "id", msg="Field required: the person's id"))
    if occurred_at is None:
        problems.append(
            problem("occurred_at", msg="Field required: a date-time with offset", kind="datetime")
        )
    event_id = f"personio:{company_id}:{event_name}:{person_id}"
    if problems or person_id is None or occurred_at is None:
        raise VendorPayloadError(problems, event_id=None)
    return Notice(event_id=event_id[:200], occurred_at=occurred_at, employee_id=person_id)
