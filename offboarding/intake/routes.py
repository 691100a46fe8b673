"""`POST /hris/events`: a signed HR event is stored as a case; its run starts in the background.

Order of work, cheapest and safest first: the body is read up to a limit, the signature
over the raw bytes is checked, and only then is anything parsed. A valid event is stored
with its audit event in one short transaction and answered at once (202); the dispatcher
creates the Prefect run right after, and keeps trying while Prefect is slow or down, so
an accepted event is never lost. Every refusal is audited with its reason and the event
id only (no personal data). Database and directory work never runs on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

import anyio
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlmodel import Session

from approvals.decisions import settle
from approvals.rules import Verdict
from offboarding.domain import audit
from offboarding.domain.cases import (
    case_id_for,
    cases_of_event,
    latest_plan,
    pick_by_event,
    start_time,
)
from offboarding.domain.models import Case, CaseStatus, PlanStatus, as_utc, insert_now
from offboarding.intake import adapters, lifecycle
from offboarding.intake.adapters import afas, personio
from offboarding.intake.hris import (
    EVENT_TYPES,
    SIGNATURE_HEADER,
    CancellationEvent,
    HrisEvent,
    IntakeAccepted,
    SignatureError,
    TerminationEvent,
    verify_signature,
)
from offboarding.wiring.services import Services
from offboarding.wiring.settings import Settings

log = structlog.get_logger(__name__)
MAX_EVENT_BYTES = 64 * 1024
INTAKE_THREADS = 2


class Refused(Exception):
    """The event is not accepted; answered with `status` and recorded in the audit log."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: Any,
        event_id: str | None = None,
        case_id: str | None = None,  # the open case a refused event concerns
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.event_id = event_id
        self.case_id = case_id


@dataclass(frozen=True)
class Stored:
    case: Case
    new: bool
    scheduled: datetime | None
    outcome: str = "opened"

    @property
    def changed(self) -> bool:
        """A new case, or a change to one: work for the dispatcher (answered 202)."""
        return self.new or self.outcome in lifecycle.CHANGED

    @classmethod
    def of(cls, change: lifecycle.Change) -> Stored:
        return cls(change.case, new=False, scheduled=change.scheduled, outcome=change.outcome)


class WakeDispatcher(Protocol):
    """Tells the dispatcher there is work: after the burst this is part of, or at once for
    an urgent case (`offboarding.orchestration.dispatcher`)."""

    def __call__(self, *, urgent: bool = False) -> None: ...


async def read_body(request: Request, limit: int = MAX_EVENT_BYTES) -> bytes:
    """The raw body, refused as soon as it grows past `limit` (never read whole first)."""
    too_large = Refused(413, "too_large", f"event larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_event(body: bytes) -> HrisEvent:
    """Validate an authenticated body; a refusal names the fields, never echoes values."""
    try:
        kind = json.loads(body).get("type")
    except (ValueError, AttributeError):
        kind = None  # not a JSON object: the model says so below
    if isinstance(kind, str) and kind not in EVENT_TYPES:
        wrong_type: dict[str, Any] = {
            "type": "literal_error",
            "loc": ("body", "type"),
            "msg": f"Input should be one of: {', '.join(EVENT_TYPES)}",
        }
        raise Refused(422, "malformed", [wrong_type], event_id=_event_id_of(body))
    model: type[TerminationEvent] | type[CancellationEvent] = TerminationEvent
    if isinstance(kind, str):
        model = EVENT_TYPES[kind]
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        for found in problems:
            found["loc"] = ("body", *found["loc"])
        raise Refused(422, "malformed", problems, event_id=_event_id_of(body)) from exc


def _event_id_of(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("id")
    except (ValueError, AttributeError):
        return None
    return value[:200] if isinstance(value, str) else None


def new_case(event: TerminationEvent, *, scheduled: bool) -> Case:
    return Case(
        event_id=event.id,
        employee_id=event.employee.id,
        employee_email=event.employee.email,
        display_name=event.employee.display_name,
        manager_id=event.employee.manager_id,
        requested_by=event.requested_by,
        last_working_day=event.last_working_day,
        urgent=event.urgent,
        occurred_at=as_utc(event.occurred_at),
        status=CaseStatus.SCHEDULED if scheduled else CaseStatus.RECEIVED,
    )


def store_case(services: Services, event: HrisEvent) -> Stored:
    """The event's effect and its audit event in one short transaction (a worker thread):
    a new case; or, for an employee whose case is open, an urgent upgrade, a new last
    working day, or a cancellation (`offboarding.intake.lifecycle`). A copy of an event
    already received is answered from the database, without asking the people directory."""
    settings = services.settings
    scheduled = (
        None
        if isinstance(event, CancellationEvent)
        else start_time(
            last_working_day=event.last_working_day,
            urgent=event.urgent,
            zone=settings.zone,
            end_of_day=settings.end_of_day,
            now=datetime.now(UTC),
        )
    )
    known: list[bool] = []  # the people were found (asked once, also when retried)

    def store(session: Session) -> Stored | lifecycle.Change:
        # a new leaver (the usual event) is told apart in one read; anything else is
        # looked at in detail: a copy, a resend, a change to or a cancellation of a case
        fresh = not isinstance(event, CancellationEvent) and lifecycle.nothing_known(
            session, event.id, event.employee.id
        )
        of_event = [] if fresh else cases_of_event(session, event.id)
        existing = pick_by_event(of_event, as_utc(event.occurred_at))
        if existing is not None:
            return Stored(existing, new=False, scheduled=None, outcome="unchanged")
        earlier = None if fresh else lifecycle.seen(session, event.id)
        if earlier is not None:
            return earlier
        if not known:
            check_people(services, event)
            known.append(True)
        if isinstance(event, CancellationEvent):
            return lifecycle.cancel(session, event, decided=decided(services))
        open_case = None if fresh else lifecycle.locked_open_case(session, event.employee.id)
        if open_case is not None:
            return lifecycle.change_open_case(
                session, open_case, event, zone=settings.zone, end_of_day=settings.end_of_day
            )
        case = new_case(event, scheduled=scheduled is not None)
        # a rehire whose HR system reuses the event id of an earlier (closed) case
        reused = any(c.id == case_id_for(event.id) for c in of_event)
        case.id = case_id_for(event.id, as_utc(event.occurred_at) if reused else None)
        insert_now(session, case)  # a racing copy of this event (or employee) fails here
        # and retries
        audit.append(
            session,
            action="case.opened",
            actor=f"hris:{event.requested_by}",
            case_id=case.id,
            details={
                "event_id": event.id,
                "employee_id": event.employee.id,
                "last_working_day": event.last_working_day.isoformat(),
                "urgent": event.urgent,
                "scheduled_for": scheduled.isoformat() if scheduled else None,
            },
        )
        return Stored(case, new=True, scheduled=scheduled)

    return _in_transaction(services, event, store)


def check_people(services: Services, event: HrisEvent) -> None:
    """The leaver and the requester are in the people directory (one lookup), else 422."""
    found = services.people.find_people([event.employee.id, event.requested_by])
    for employee_id, role in ((event.employee.id, "employee"), (event.requested_by, "requester")):
        if employee_id not in found:
            raise Refused(
                422,
                f"unknown_{role}",
                f"unknown {role if role == 'employee' else 'requested_by'} {employee_id!r}: "
                "not found in the people directory",
                event_id=event.id,
            )


def _in_transaction(services: Services, event: HrisEvent, work: Callable[[Session], Any]) -> Stored:
    """`work` in the intake's transaction; a lifecycle conflict is a refusal (nothing kept)."""

    def run(session: Session) -> Stored:
        found = work(session)
        return Stored.of(found) if isinstance(found, lifecycle.Change) else found

    try:
        result: Stored = audit.in_transaction(services.engine, run)
    except lifecycle.Conflict as conflict:
        raise Refused(
            conflict.status,
            conflict.reason,
            conflict.detail,
            event_id=event.id,
            case_id=conflict.case_id,
        ) from conflict
    return result


def decided(services: Services) -> Callable[[Case], str | None]:
    """The verdict the recorded approvals already reached on the case's plan, if any (the
    same decision function the approval page and the flow ask)."""

    def verdict_of(case: Case) -> str | None:
        record = latest_plan(services.engine, case.id)
        if record is None:
            return None
        if record.status == PlanStatus.APPROVED:
            return Verdict.APPROVED.value
        if record.status != PlanStatus.PENDING:
            return None
        found = settle(services, case, record).verdict
        return None if found == Verdict.PENDING else found.value

    return verdict_of


def record_refusal(services: Services, refusal: Refused, actor: str = "hris") -> None:
    audit.record(
        services.engine,
        action="intake.refused",
        actor=actor,
        outcome=refusal.reason,
        case_id=refusal.case_id,
        details={"event_id": refusal.event_id, "status": refusal.status},
    )


def intake_router(services: Services, *, wake_dispatcher: WakeDispatcher) -> APIRouter:
    router = APIRouter(tags=["HRIS intake"])
    settings = services.settings
    # The database and directory work of intake: a few threads per web process. More only
    # add switching between threads of one process in a burst (measured: a 50-event burst
    # cost twice the CPU with 16 threads as with 2); a burst is spread over processes
    # instead (`web_processes`). A vendor's API is asked on threads of its own.
    limiter = anyio.CapacityLimiter(INTAKE_THREADS)
    vendor_limiter = anyio.CapacityLimiter(settings.db_concurrency)

    def keys() -> list[str]:
        found = [settings.hris_secret.get_secret_value()]
        if settings.hris_previous_secret is not None:
            found.append(settings.hris_previous_secret.get_secret_value())
        return found

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    async def asking_vendor(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=vendor_limiter)

    @router.post(
        "/hris/events",
        status_code=202,
        response_model=IntakeAccepted,
        summary="Receive an employee.terminated event",
        openapi_extra={
            "parameters": [
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "t=<unix seconds>,"
                    'v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>; several v1= allowed '
                    "during key rotation; older than 5 minutes is refused",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/TerminationEvent"}
                    }
                },
            },
        },
        responses={
            200: {"model": IntakeAccepted, "description": "Event already received: same case"},
            401: {"description": "Missing, invalid or stale signature (checked first)"},
            409: {"description": "A case for this employee is already open"},
            413: {"description": "Body larger than 64 KiB"},
            422: {"description": "Malformed body, missing field, or unknown employee"},
        },
    )
    async def receive_event(request: Request) -> JSONResponse:
        try:
            body = await read_body(request)
            try:
                verify_signature(
                    request.headers.get(SIGNATURE_HEADER),
                    body,
                    keys(),
                    tolerance_seconds=settings.hris_tolerance_seconds,
                )
            except SignatureError as exc:
                raise Refused(401, "unauthorized", f"signature refused: {exc}") from exc
            event = parse_event(body)
            stored: Stored = await in_thread(store_case, services, event)
        except Refused as refusal:
            await in_thread(record_refusal, services, refusal)
            log.info("intake refused", reason=refusal.reason, event_id=refusal.event_id)
            return problem(refusal)
        if stored.changed:
            wake_dispatcher(urgent=stored.case.urgent)
            log.info(
                f"case {stored.outcome}", case_id=stored.case.id, employee_id=event.employee.id
            )
        return accepted(stored)

    vendor_routes(
        router,
        services,
        in_thread=in_thread,
        asking_vendor=asking_vendor,
        wake_dispatcher=wake_dispatcher,
    )
    return router


@dataclass(frozen=True)
class VendorAdapter:
    """One HR system's webhook: its module and the setting holding its secret. `parse` runs
    in a worker thread: it may ask the vendor's API (AFAS: a GetConnector)."""

    name: str
    setting: str
    verify: Callable[..., None]
    parse: Callable[[bytes, Settings], adapters.Notice | None]


VENDORS = (
    VendorAdapter(
        personio.NAME,
        "personio_webhook_token",
        personio.verify,
        lambda body, _settings: personio.parse(body),
    ),
    VendorAdapter(
        afas.NAME,
        "afas_webhook_password",
        afas.verify,
        lambda body, settings: afas.parse(body, settings.afas),
    ),
)


def vendor_event(
    services: Services, notice: adapters.Notice, requested_by: str, urgent: bool
) -> TerminationEvent:
    """Complete a vendor notice from the people directory (runs in a worker thread)."""
    person = services.people.find_person(notice.employee_id)
    if person is None:
        raise Refused(
            422,
            "unknown_employee",
            f"unknown employee {notice.employee_id!r}: not found in the people directory",
            event_id=notice.event_id,
        )
    try:
        return adapters.termination_event(
            notice,
            person,
            requested_by=requested_by,
            urgent=urgent,
            zone=services.settings.zone,
        )
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        raise Refused(422, "malformed", problems, event_id=notice.event_id) from exc


def webhook_options(request: Request, event_id: str | None) -> tuple[str, bool]:
    """`requested_by` (required) and `urgent` from the webhook URL set in the vendor."""
    requested_by = request.query_params.get("requested_by", "").strip()
    urgent = request.query_params.get("urgent", "false").strip().lower()
    problems = []
    if not requested_by or len(requested_by) > 100:
        problems.append(
            {"type": "missing", "loc": ["query", "requested_by"], "msg": "Field required"}
        )
    if urgent not in ("true", "false", "1", "0"):
        problems.append({"type": "bool_parsing", "loc": ["query", "urgent"], "msg": "true/false"})
    if problems:
        raise Refused(422, "malformed", problems, event_id=event_id)
    return requested_by, urgent in ("true", "1")


def vendor_routes(
    router: APIRouter,
    services: Services,
    *,
    in_thread: Callable[..., Any],
    asking_vendor: Callable[..., Any],
    wake_dispatcher: WakeDispatcher,
) -> None:
    """`POST /hris/<vendor>`: the same pipeline as `/hris/events` (limit, authenticate the
    raw body, parse, store in one transaction, wake; every refusal audited), with the
    vendor's authentication and format. 404 while the vendor's secret is not configured."""
    settings = services.settings

    def route(adapter: VendorAdapter) -> Callable[[Request], Any]:
        async def receive(request: Request) -> JSONResponse:
            secret = getattr(settings, adapter.setting)
            if secret is None or not secret.get_secret_value():
                setting = f"OFFBOARDING_{adapter.setting.upper()}"
                return JSONResponse(
                    status_code=404,
                    content={"detail": f"the {adapter.name} intake is off: set {setting}"},
                )
            actor = f"hris:{adapter.name}"
            try:
                body = await read_body(request)
                try:
                    adapter.verify(request.headers, body, [secret.get_secret_value()])
                except SignatureError as exc:
                    raise Refused(401, "unauthorized", f"{adapter.name}: {exc}") from exc
                try:
                    notice = await asking_vendor(adapter.parse, body, settings)
                except adapters.VendorPayloadError as exc:
                    raise Refused(422, "malformed", exc.problems, event_id=exc.event_id) from exc
                except afas.AfasUnavailable as exc:
                    raise Refused(
                        503, "vendor_unavailable", str(exc), event_id=exc.event_id
                    ) from exc
                except adapters.Unmappable as exc:
                    raise Refused(503, "unmappable", str(exc), event_id=exc.event_id) from exc
                if notice is None:
                    return JSONResponse(
                        status_code=200, content={"detail": "received; starts no offboarding"}
                    )
                requested_by, urgent = webhook_options(request, notice.event_id)
                event = await in_thread(vendor_event, services, notice, requested_by, urgent)
                stored: Stored = await in_thread(store_case, services, event)
            except Refused as refusal:
                await in_thread(record_refusal, services, refusal, actor)
                log.info("intake refused", vendor=adapter.name, reason=refusal.reason)
                return problem(refusal)
            if stored.changed:
                wake_dispatcher(urgent=stored.case.urgent)
                log.info(f"case {stored.outcome}", case_id=stored.case.id, vendor=adapter.name)
            return accepted(stored)

        return receive

    for adapter in VENDORS:
        router.add_api_route(
            f"/hris/{adapter.name}",
            route(adapter),
            methods=["POST"],
            status_code=202,
            response_model=IntakeAccepted,
            summary=f"Receive a {adapter.name} webhook",
            responses={
                200: {
                    "description": "Already received (same case), or an event that starts "
                    "no offboarding"
                },
                401: {"description": "Missing or wrong vendor token/signature"},
                404: {"description": "This vendor's secret is not configured"},
                409: {"description": "A case for this employee is already open"},
                422: {"description": "Vendor field or URL option missing, or unknown person"},
                503: {
                    "description": "Authentic, but cannot be mapped to an employee now "
                    "(the vendor's API is not configured, unreachable or refused the token)"
                },
            },
        )


def problem(refusal: Refused) -> JSONResponse:
    """A refusal as RFC 9457 problem details; `detail` is the message (for a malformed body
    the list of fields, each with its location), `reason` the audited reason code."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(refusal.status).phrase,
        "status": refusal.status,
        "detail": refusal.detail,
        "reason": refusal.reason,
    }
    if refusal.case_id is not None:
        body["case_id"] = refusal.case_id
    return JSONResponse(
        status_code=refusal.status, content=body, media_type="application/problem+json"
    )


def accepted(stored: Stored) -> JSONResponse:
    case = stored.case
    body = IntakeAccepted(
        case_id=case.id,
        status=case.status.value,
        flow_run_id=case.flow_run_id,
        scheduled_for=stored.scheduled,
        outcome=stored.outcome,
    )
    return JSONResponse(
        status_code=202 if stored.changed else 200, content=body.model_dump(mode="json")
    )


def document_intake(app: FastAPI) -> None:
    """The intake reads its body raw (signature first); describe the event in the schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            event = TerminationEvent.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(event.pop("$defs", {}))
            components["TerminationEvent"] = event
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
