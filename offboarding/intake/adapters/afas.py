"""AFAS Profit webhooks: signed, authenticated, parsed — but they do not name the employee.

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

So an AFAS notification names a dossier item, not an employee: turning it into a case needs
a GetConnector call (dossier item → employee, contract end date, reason "ontslag op staande
voet"), which is not built here. `parse` verifies and reads the envelope; `test.executed` is
acknowledged (so "Send test message" in Profit succeeds); a dossier/workflow notification is
refused as `Unmappable` (503: AFAS retries, nothing is lost while the lookup is missing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence

from offboarding.intake.adapters import Notice, Unmappable, VendorPayloadError, problem, text_field
from offboarding.intake.hris import SignatureError

NAME = "afas"
SIGNATURE_HEADER = "X-Profit-Signature-256"
TEST_EVENT = "test.executed"


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


def parse(body: bytes) -> Notice | None:
    """None for Profit's test message; otherwise Unmappable (see the module docstring)."""
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
    if event_type not in (None, TEST_EVENT) and text_field(data, "Data", "SubjectId") is None:
        problems.append(problem("Data", "SubjectId", msg="Field required"))
    event_id = text_field(data, "EventId")
    qualified = f"afas:{text_field(data, 'EnvironmentId')}:{event_id}" if event_id else None
    if problems:
        raise VendorPayloadError(problems, event_id=qualified)
    if event_type == TEST_EVENT:
        return None
    raise Unmappable(
        "AFAS notifications name a dossier item (Data.SubjectId), not an employee; resolving "
        "it needs an AFAS GetConnector, which this service does not have yet",
        event_id=qualified,
    )
