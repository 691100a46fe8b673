"""`POST /hris/events`: a signed HR event opens a case and starts (or schedules) its run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from offboarding import audit
from offboarding.cases import find_by_event, find_open_case, new_case, run_name, start_time
from offboarding.hris import (
    SIGNATURE_HEADER,
    IntakeAccepted,
    SignatureError,
    TerminationEvent,
    verify_signature,
)
from offboarding.runs import OrchestratorUnavailable, RunGateway
from offboarding.services import Services

log = structlog.get_logger(__name__)
MAX_EVENT_BYTES = 64 * 1024
_CASE_NAMESPACE = uuid.UUID("5b0f6a0e-2f43-4c1c-9a55-0ff0b0a4d1e2")


def case_id_for(event_id: str) -> str:
    """Deterministic, so a retried event after a partial failure finds the same run."""
    return uuid.uuid5(_CASE_NAMESPACE, event_id).hex


def intake_router(services: Services, gateway: RunGateway) -> APIRouter:
    router = APIRouter(tags=["HRIS intake"])
    settings = services.settings

    async def signed_by_hris(
        request: Request,
        signature: Annotated[
            str | None,
            Header(
                alias=SIGNATURE_HEADER,
                description='t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>; '
                "several v1= allowed during key rotation; older than 5 minutes is refused",
            ),
        ] = None,
    ) -> None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
            raise HTTPException(
                status_code=413, detail=f"event larger than {MAX_EVENT_BYTES} bytes"
            )
        body = await request.body()
        if len(body) > MAX_EVENT_BYTES:
            raise HTTPException(
                status_code=413, detail=f"event larger than {MAX_EVENT_BYTES} bytes"
            )
        keys = [settings.hris_secret.get_secret_value()]
        if settings.hris_previous_secret is not None:
            keys.append(settings.hris_previous_secret.get_secret_value())
        try:
            verify_signature(
                signature, body, keys, tolerance_seconds=settings.hris_tolerance_seconds
            )
        except SignatureError as exc:
            audit.record(
                services.engine,
                action="intake.refused",
                actor="hris",
                outcome="unauthorized",
                details={"reason": str(exc)},
            )
            raise HTTPException(status_code=401, detail=f"signature refused: {exc}") from exc

    @router.post(
        "/hris/events",
        status_code=202,
        response_model=IntakeAccepted,
        dependencies=[Depends(signed_by_hris)],
        summary="Receive an employee.terminated event",
        responses={
            200: {"model": IntakeAccepted, "description": "Event already received: same case"},
            401: {"description": "Missing, invalid or stale signature"},
            409: {"description": "A case for this employee is already open"},
            413: {"description": "Body larger than 64 KiB"},
            422: {"description": "Malformed body, missing field, or unknown employee"},
            503: {"description": "Workflow engine unavailable; nothing was created, resend later"},
        },
    )
    async def receive_event(event: TerminationEvent) -> JSONResponse:
        engine = services.engine
        with Session(engine, expire_on_commit=False) as session:
            existing = find_by_event(session, event.id)
            if existing is not None:
                return _accepted(200, existing.id, existing.status, existing.flow_run_id, None)

        with Session(engine) as session:
            open_case = find_open_case(session, event.employee.id)
        if open_case is not None:
            raise HTTPException(
                status_code=409,
                detail=(
                    f"an offboarding case for {event.employee.id} is already open: "
                    f"{open_case.id} ({open_case.status.value}); nothing was created"
                ),
            )
        for employee_id, role in (
            (event.employee.id, "employee"),
            (event.requested_by, "requested_by"),
        ):
            person = await run_in_threadpool(services.people.find_person, employee_id)
            if person is None:
                raise HTTPException(
                    status_code=422,
                    detail=f"unknown {role} {employee_id!r}: not found in the people directory",
                )

        scheduled = start_time(
            last_working_day=event.last_working_day,
            urgent=event.urgent,
            zone=settings.zone,
            end_of_day=settings.end_of_day,
            now=datetime.now(UTC),
        )
        case = new_case(event, scheduled=scheduled is not None)
        case.id = case_id_for(event.id)
        with Session(engine, expire_on_commit=False) as session:
            session.add(case)
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                again = find_by_event(session, event.id)
                if again is None:
                    raise
                return _accepted(200, again.id, again.status, again.flow_run_id, None)
            try:
                case.flow_run_id = await gateway.start(
                    case_id=case.id,
                    event_id=event.id,
                    run_name=run_name(event.employee.id, event.employee.email),
                    scheduled_time=scheduled,
                    urgent=event.urgent,
                )
            except OrchestratorUnavailable as exc:
                session.rollback()
                log.error("intake failed", event_id=event.id, error=str(exc))
                raise HTTPException(
                    status_code=503,
                    detail="workflow engine unavailable; nothing was created, resend later",
                ) from exc
            session.add(case)
            session.commit()
        audit.record(
            engine,
            action="case.opened",
            actor=f"hris:{event.requested_by}",
            case_id=case.id,
            details={
                "event_id": event.id,
                "employee_id": event.employee.id,
                "last_working_day": event.last_working_day.isoformat(),
                "urgent": event.urgent,
                "flow_run_id": case.flow_run_id,
                "scheduled_for": scheduled.isoformat() if scheduled else None,
            },
        )
        log.info("case opened", case_id=case.id, employee_id=event.employee.id)
        return _accepted(202, case.id, case.status, case.flow_run_id, scheduled)

    return router


def _accepted(
    status_code: int, case_id: str, status: str, flow_run_id: str | None, scheduled: datetime | None
) -> JSONResponse:
    body = IntakeAccepted(
        case_id=case_id, status=str(status), flow_run_id=flow_run_id, scheduled_for=scheduled
    )
    return JSONResponse(status_code=status_code, content=body.model_dump(mode="json"))
