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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlmodel import Session

from offboarding.domain import audit
from offboarding.domain.cases import find_by_event, find_open_case, start_time
from offboarding.domain.models import Case, CaseStatus, as_utc
from offboarding.intake import adapters
from offboarding.intake.adapters import afas, personio
from offboarding.intake.hris import (
    SIGNATURE_HEADER,
    IntakeAccepted,
    SignatureError,
    TerminationEvent,
    verify_signature,
)
from offboarding.wiring.services import Services

log = structlog.get_logger(__name__)
MAX_EVENT_BYTES = 64 * 1024
_CASE_NAMESPACE = uuid.UUID("5b0f6a0e-2f43-4c1c-9a55-0ff0b0a4d1e2")


def case_id_for(event_id: str) -> str:
    """Deterministic: the same event always names the same case."""
    return uuid.uuid5(_CASE_NAMESPACE, event_id).hex


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


def parse_event(body: bytes) -> TerminationEvent:
    """Validate an authenticated body; a refusal names the fields, never echoes values."""
    try:
        return TerminationEvent.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False, include_context=False)
        for problem in problems:
            problem["loc"] = ("body", *problem["loc"])
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


def store_case(services: Services, event: TerminationEvent) -> Stored:
    """The case and its audit event in one short transaction (runs in a worker thread)."""
    engine, settings = services.engine, services.settings
    with Session(engine, expire_on_commit=False) as session:
        existing = find_by_event(session, event.id)
    if existing is not None:
        return Stored(existing, new=False, scheduled=None)
    for employee_id, role in ((event.employee.id, "employee"), (event.requested_by, "requester")):
        if services.people.find_person(employee_id) is None:
            raise Refused(
                422,
                f"unknown_{role}",
                f"unknown {role if role == 'employee' else 'requested_by'} {employee_id!r}: "
                "not found in the people directory",
                event_id=event.id,
            )
    scheduled = start_time(
        last_working_day=event.last_working_day,
        urgent=event.urgent,
        zone=settings.zone,
        end_of_day=settings.end_of_day,
        now=datetime.now(UTC),
    )

    def open_case(session: Session) -> Stored:
        again = find_by_event(session, event.id)
        if again is not None:
            return Stored(again, new=False, scheduled=None)
        open_case = find_open_case(session, event.employee.id)
        if open_case is not None and open_case.event_id == event.id:
            # a copy of this event committed between the two reads (PostgreSQL reads
            # committed data per statement): it is the same case, not a conflict
            return Stored(open_case, new=False, scheduled=None)
        if open_case is not None:
            raise Refused(
                409,
                "case_open",
                f"an offboarding case for {event.employee.id} is already open: "
                f"{open_case.id} ({open_case.status.value}); nothing was created",
                event_id=event.id,
                case_id=open_case.id,
            )
        case = new_case(event, scheduled=scheduled is not None)
        case.id = case_id_for(event.id)
        session.add(case)
        session.flush()  # a racing copy of this event (or employee) fails here, and retries
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

    return audit.in_transaction(engine, open_case)


def record_refusal(services: Services, refusal: Refused, actor: str = "hris") -> None:
    audit.record(
        services.engine,
        action="intake.refused",
        actor=actor,
        outcome=refusal.reason,
        case_id=refusal.case_id,
        details={"event_id": refusal.event_id, "status": refusal.status},
    )


def intake_router(services: Services, *, wake_dispatcher: Callable[[], None]) -> APIRouter:
    router = APIRouter(tags=["HRIS intake"])
    settings = services.settings
    limiter = anyio.CapacityLimiter(settings.db_concurrency)

    def keys() -> list[str]:
        found = [settings.hris_secret.get_secret_value()]
        if settings.hris_previous_secret is not None:
            found.append(settings.hris_previous_secret.get_secret_value())
        return found

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

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
            return JSONResponse(status_code=refusal.status, content={"detail": refusal.detail})
        if stored.new:
            wake_dispatcher()
            log.info("case opened", case_id=stored.case.id, employee_id=event.employee.id)
        return accepted(stored)

    vendor_routes(router, services, in_thread=in_thread, wake_dispatcher=wake_dispatcher)
    return router


@dataclass(frozen=True)
class VendorAdapter:
    """One HR system's webhook: its module and the setting holding its secret."""

    name: str
    setting: str
    verify: Callable[..., None]
    parse: Callable[[bytes], adapters.Notice | None]


VENDORS = (
    VendorAdapter(personio.NAME, "personio_webhook_token", personio.verify, personio.parse),
    VendorAdapter(afas.NAME, "afas_webhook_password", afas.verify, afas.parse),
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
    wake_dispatcher: Callable[[], None],
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
                    notice = adapter.parse(body)
                except adapters.VendorPayloadError as exc:
                    raise Refused(422, "malformed", exc.problems, event_id=exc.event_id) from exc
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
                return JSONResponse(status_code=refusal.status, content={"detail": refusal.detail})
            if stored.new:
                wake_dispatcher()
                log.info("case opened", case_id=stored.case.id, vendor=adapter.name)
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
                503: {"description": "Authentic, but cannot be mapped to an employee yet"},
            },
        )


def accepted(stored: Stored) -> JSONResponse:
    case = stored.case
    body = IntakeAccepted(
        case_id=case.id,
        status=case.status.value,
        flow_run_id=case.flow_run_id,
        scheduled_for=stored.scheduled,
    )
    return JSONResponse(
        status_code=202 if stored.new else 200, content=body.model_dump(mode="json")
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
