"""AFAS Profit webhooks: signed, authenticated, parsed, and resolved through a GetConnector.

What AFAS documents (AFASSoftware/OASContent `markdownpages/profit/en/webhooks.md`, dated
2026-06-16; AFAS Help Center "Webhooks on dossier items and workflows",
help.afas.nl/help/NL/SE/140869.htm):
- webhooks exist per app connector for dossier items, reactions and workflow tasks/actions;
  each webhook has a URL (HTTPS, anonymously reachable) and a password;
- signature: header `X-Profit-Signature-256: sha256=<hex HMAC-SHA256>`, keyed with the
  webhook's password; this adapter computes it over the raw body (the page does not spell out
  the signed bytes; the GitHub-style header says body) and compares in constant time;
- body: `EventId`, `EnvironmentId`, `Timestamp` (UTC) always; `EventType` (`test.executed`,
  `subject.created|updated|deleted`, `subject.reaction.*`, `workflow.action.executed`,
  `workflow.task.entered`); `Data` with `SubjectTypeId`, `SubjectId` (dossier item number),
  for workflows `WorkflowName`, `TaskName`/`ActionName` (GUIDs);
- "The notification indicates that something has changed, but not what has changed ... Use a
  GetConnector to retrieve the changed data." Delivery is by a batch job, 2 s timeout,
  retried with growing intervals, then `Failed`.

So an AFAS notification names a dossier item, not an employee. With `afas` settings (the
REST API and the HR administrator's GetConnector, `afas_lookup`) a dossier item or workflow
notification is resolved: the GetConnector's row gives the employee number (the people
directory's employee id), the date out of service (the last working day) and whether it is
an instant dismissal (urgent); no row means the item is not a leaving, acknowledged and
nothing starts. Reactions, deletions and other event types start nothing. The event id is
`afas:<EnvironmentId>:<EventId>`, the same for Profit's retries of one notification.
Without `afas` settings a dossier/workflow notification is refused as `Unmappable` (503:
Profit retries, nothing is lost until the lookup is configured). `test.executed` is
acknowledged either way (so "Send test message" in Profit succeeds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from offboarding.intake.adapters import (
    Notice,
    Unmappable,
    VendorPayloadError,
    problem,
    text_field,
    timestamp_field,
)
from offboarding.intake.adapters.afas_lookup import AfasUnavailable as AfasUnavailable
from offboarding.intake.adapters.afas_lookup import find_leaver, new_client
from offboarding.intake.hris import SignatureError
from offboarding.wiring.settings import AfasSettings

NAME = "afas"
SIGNATURE_HEADER = "X-Profit-Signature-256"
TEST_EVENT = "test.executed"
# what can name a new leaver: a dossier item made or changed, a step in its workflow
LOOKUP_EVENTS = frozenset(
    {"subject.created", "subject.updated", "workflow.action.executed", "workflow.task.entered"}
)


@dataclass(frozen=True)
class Notification:
    """The envelope of an authentic notification (what it says; never whom it is about)."""

    event_id: str  # afas:<EnvironmentId>:<EventId>
    event_type: str
    occurred_at: datetime | None
    subject_id: str | None  # the dossier item number


def sign(password: str, body: bytes) -> str:
    """The header value Profit sends (used by the tests)."""
    return "sha256=" + hmac.new(password.encode(), body, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> None:
    sent = headers.get(SIGNATURE_HEADER)
    if not sent:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    scheme, _, digest = sent.strip().partition("=")
    if scheme.lower() != "sha256" or not digest:
        raise SignatureError(f"{SIGNATURE_HEADER} must be sha256=<hex>")
    for secret in secrets:
        if secret and hmac.compare_digest(sign(secret, body), f"sha256={digest.lower()}"):
            return
    raise SignatureError(f"{SIGNATURE_HEADER} does not match the configured webhook password")


def read(body: bytes) -> Notification:
    """The notification's envelope; VendorPayloadError names a missing or malformed field."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise VendorPayloadError([problem(msg="not JSON", kind="json_invalid")]) from exc
    if not isinstance(data, dict):
        raise VendorPayloadError([problem(msg="not a JSON object", kind="object_type")])
    problems = [
        problem(field, msg="Field required")
        for field in ("EventId", "EnvironmentId", "EventType", "Timestamp")
        if text_field(data, field) is None
    ]
    event_type = text_field(data, "EventType")
    subject_id = text_field(data, "Data", "SubjectId")
    occurred_at = timestamp_field(data, "Timestamp")
    if event_type not in (None, TEST_EVENT):
        if subject_id is None:
            problems.append(problem("Data", "SubjectId", msg="Field required"))
        elif not subject_id.isdigit():
            problems.append(
                problem("Data", "SubjectId", msg="a dossier item number (digits)", kind="int")
            )
        if text_field(data, "Timestamp") is not None and occurred_at is None:
            problems.append(problem("Timestamp", msg="a UTC date-time", kind="datetime"))
    event_id = text_field(data, "EventId")
    qualified = f"afas:{text_field(data, 'EnvironmentId')}:{event_id}" if event_id else None
    if problems or qualified is None or event_type is None:
        raise VendorPayloadError(problems, event_id=qualified)
    return Notification(qualified[:200], event_type, occurred_at, subject_id)


def parse(
    body: bytes,
    settings: AfasSettings | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
) -> Notice | None:
    """The leaver a notification is about, asked of AFAS's GetConnector (blocking: call it
    in a worker thread); None for what starts no offboarding. Raises Unmappable without
    `settings`, AfasUnavailable when AFAS cannot tell now (both 503: Profit delivers again),
    VendorPayloadError for a malformed body or a GetConnector row without a needed field."""
    notification = read(body)
    if notification.event_type == TEST_EVENT:
        return None
    if settings is None:
        raise Unmappable(
            "AFAS notifications name a dossier item (Data.SubjectId), not an employee; "
            "resolving it needs an AFAS GetConnector: set OFFBOARDING_AFAS__ENVIRONMENT, "
            "OFFBOARDING_AFAS__TOKEN and OFFBOARDING_AFAS__GET_CONNECTOR (or [afas] in the "
            "config file)",
            event_id=notification.event_id,
        )
    if notification.event_type not in LOOKUP_EVENTS:
        return None
    subject_id, occurred_at = notification.subject_id, notification.occurred_at
    if subject_id is None or occurred_at is None:  # read() refuses these for such events
        raise VendorPayloadError([problem("Data", "SubjectId", msg="Field required")])
    with new_client(settings, transport) as client:
        leaver = find_leaver(
            client,
            get_connector=settings.get_connector,
            subject_id=subject_id,
            urgent_reasons=settings.urgent_reasons,
            event_id=notification.event_id,
        )
    if leaver is None:
        return None
    return Notice(
        event_id=notification.event_id,
        occurred_at=occurred_at,
        employee_id=leaver.employee_id,
        last_working_day=leaver.last_working_day,
        urgent=leaver.urgent,
    )
