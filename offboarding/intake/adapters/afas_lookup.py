"""AFAS Profit: the leaver behind a dossier item, read through a GetConnector.

What AFAS documents (AFASSoftware/OASContent `markdownpages/profit/en/get-connector.md`,
`authentication.md`, `troubleshooting.md`; the OpenAPI descriptions in `OpenApiSpecs/profit`):
- `GET <base>/connectors/<GetConnector>?filterfieldids=F&filtervalues=V&operatortypes=1
  &skip=0&take=1` (operator 1 is "is equal to"; `,` and `;` in these parameters mean AND and
  OR, so a value is only ever a dossier item number here); the answer is
  `{"skip": 0, "take": 1, "rows": [{...}]}`, one object per row keyed by the field ids;
- `Authorization: AfasToken <base64 of "<token><version>1</version><data>…</data></token>">`;
  401 when the token is not valid, 403 for the environment's IP restrictions (neither with a
  body worth reading); 500 with `{"externalMessage", "errorNumber", "profitLogReference"}`,
  e.g. "GetConnector not supported for this app or the user is not authorized" or
  "Connector field '…' not found"; 503 with `retry_after` during maintenance;
- date-time fields end in `Z`, "we recommend ignoring this Z. The time is always Amsterdam",
  so a date is the first ten characters;
- "A good request will be handled within 1000ms"; the webhook that asks gives its receiver 2 s.

The GetConnector is the HR administrator's: it lists the dossier items that mean "leaving"
(its built-in filter on dossier item type or workflow), one row per item, with the fields
below. No row is an answer too: the item is not a leaving, and nothing starts.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import quote

import httpx

from offboarding.intake.adapters import Unmappable, VendorPayloadError, text_field
from offboarding.wiring.settings import AfasSettings

SUBJECT_FIELD = "SubjectId"  # dossier item number ("Dossieritem"), the filter
EMPLOYEE_FIELD = "EmployeeId"  # employee number ("Medewerker"): the directory's employee id
END_DATE_FIELD = "EmploymentEndDate"  # date out of service ("Datum uit dienst")
REASON_FIELD = "ReasonEndEmployment"  # optional: reason out of service ("Reden uit dienst")
INSTANT_FIELD = "InstantDismissal"  # optional yes/no: "ontslag op staande voet"
CONNECT_SHARE = 1 / 3  # of the timeout, at most 0.5 s: the rest is for AFAS's answer


class AfasUnavailable(Unmappable):
    """AFAS could not tell (unreachable, slow, 5xx, our token refused): answered 503, so
    Profit delivers the notification again; nothing is created in between."""


@dataclass(frozen=True)
class Leaver:
    """One row of the GetConnector: a dossier item that means someone leaves."""

    subject_id: str
    employee_id: str
    last_working_day: date
    urgent: bool


def default_base_url(environment: str) -> str:
    return f"https://{environment}.rest.afas.online/ProfitRestServices"


def authorization(token: str) -> str:
    """The `Authorization` value for a user token (its <data>, or the whole XML as Profit
    shows it once when the token is made)."""
    xml = token.strip()
    if not xml.startswith("<token>"):
        xml = f"<token><version>1</version><data>{xml}</data></token>"
    return "AfasToken " + base64.b64encode(xml.encode()).decode()


def new_client(
    settings: AfasSettings, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """A client for the environment's REST API, bounded by `settings.timeout_seconds` as a
    whole: connecting takes at most a third of it (0.5 s at most), the answer the rest."""
    budget = settings.timeout_seconds
    connect = min(0.5, budget * CONNECT_SHARE)
    return httpx.Client(
        base_url=settings.base_url or default_base_url(settings.environment),
        headers={
            "Authorization": authorization(settings.token.get_secret_value()),
            "Accept": "application/json",
        },
        timeout=httpx.Timeout(budget - connect, connect=connect, pool=connect),
        follow_redirects=False,
        transport=transport,
    )


def find_leaver(
    client: httpx.Client,
    *,
    get_connector: str,
    subject_id: str,
    urgent_reasons: Collection[str] = (),
    event_id: str | None = None,
) -> Leaver | None:
    """The leaver the dossier item is about; None when the GetConnector has no row for it.

    Raises AfasUnavailable when AFAS does not answer with rows, and VendorPayloadError
    (naming the GetConnector's field) when the row lacks what a case needs."""
    if not subject_id.isdigit():
        raise ValueError("a dossier item number is digits only")
    host = client.base_url.host
    where = f"AFAS {host}, GetConnector {get_connector}"
    params = {
        "filterfieldids": SUBJECT_FIELD,
        "filtervalues": subject_id,
        "operatortypes": "1",
        "skip": "0",
        "take": "1",
    }
    try:
        response = client.get(f"connectors/{quote(get_connector, safe='')}", params=params)
    except httpx.TimeoutException as exc:
        raise AfasUnavailable(
            f"{where}: no answer in time ({type(exc).__name__}); Profit delivers again",
            event_id=event_id,
        ) from exc
    except httpx.HTTPError as exc:
        raise AfasUnavailable(
            f"AFAS {host} unreachable ({type(exc).__name__}); Profit delivers again",
            event_id=event_id,
        ) from exc
    rows = _rows(response, where, event_id)
    if not rows:
        return None
    leaver = leaver_from(
        rows[0], get_connector=get_connector, urgent_reasons=urgent_reasons, event_id=event_id
    )
    if leaver.subject_id != subject_id:
        raise AfasUnavailable(
            f"{where}: answered another dossier item than the one asked for (is "
            f"{SUBJECT_FIELD} the dossier item number?)",
            event_id=event_id,
        )
    return leaver


def _rows(response: httpx.Response, where: str, event_id: str | None) -> list[Any]:
    status = response.status_code
    if status in (401, 403):
        why = (
            "the token is not valid or not this environment's"
            if status == 401
            else "refused by the environment's IP restriction for the app connector's token"
        )
        raise AfasUnavailable(
            f"{where}: HTTP {status}, {why}: check OFFBOARDING_AFAS__TOKEN (the app "
            "connector's user token) and that the GetConnector is in that app connector",
            event_id=event_id,
        )
    if status != 200:
        raise AfasUnavailable(f"{where}: HTTP {status}{_afas_says(response)}", event_id=event_id)
    try:
        body = response.json()
    except ValueError:
        body = None
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list):
        raise AfasUnavailable(f"{where}: the answer has no list of rows", event_id=event_id)
    return rows


def _afas_says(response: httpx.Response) -> str:
    """Profit's short error description and its log reference (for the administrator)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    message = text_field(body, "externalMessage") or text_field(body, "error", "message")
    reference = text_field(body, "profitLogReference", max_length=64)
    said = f": {message}" if message else ""
    return said + (f" (Profit log reference {reference})" if reference else "")


def leaver_from(
    row: Any,
    *,
    get_connector: str,
    urgent_reasons: Collection[str] = (),
    event_id: str | None = None,
) -> Leaver:
    """A row as a Leaver; a missing or malformed field is a problem naming that field."""
    problems: list[dict[str, Any]] = []

    def missing(field: str, what: str) -> None:
        if isinstance(row, dict) and field in row:
            msg = f"empty or not {what} in this dossier item's row"
        else:
            msg = f"Field required: the GetConnector must return {what} as field {field}"
        problems.append({"type": "missing", "loc": ["afas", get_connector, field], "msg": msg})

    subject_id = text_field(row, SUBJECT_FIELD)
    employee_id = text_field(row, EMPLOYEE_FIELD, max_length=100)
    end_date = _date(row.get(END_DATE_FIELD) if isinstance(row, dict) else None)
    instant = row.get(INSTANT_FIELD) if isinstance(row, dict) else None
    if subject_id is None:
        missing(SUBJECT_FIELD, "the dossier item number")
    if employee_id is None:
        missing(EMPLOYEE_FIELD, "the employee number")
    if end_date is None:
        missing(END_DATE_FIELD, "the date out of service (a date)")
    if instant is not None and not isinstance(instant, bool):
        missing(INSTANT_FIELD, "a yes/no for instant dismissal")
    if problems or subject_id is None or employee_id is None or end_date is None:
        raise VendorPayloadError(problems, event_id=event_id)
    reason = text_field(row, REASON_FIELD)
    reasons = {r.strip().casefold() for r in urgent_reasons}
    urgent = instant is True or (reason is not None and reason.casefold() in reasons)
    return Leaver(subject_id, employee_id, end_date, urgent)


def _date(value: Any) -> date | None:
    """A Profit date ("2026-11-30T00:00:00Z" or "2026-11-30"): its first ten characters."""
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None
