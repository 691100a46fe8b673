"""The attestation pages: the person a manual step is assigned to confirms it is done.

Same rules as the approval pages: a GET only shows (mail scanners fetch links); a POST
with the CSRF token (cookie + form) attests, once. When the last open step of a case is
attested, the waiting run is woken; if it cannot be woken now, the dispatcher does it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from approvals.attestations import (
    AlreadyAttested,
    AttestationPorts,
    attest,
    manual_steps,
    step_context,
    unattested,
)
from approvals.handover import ATTESTED, hand_over
from approvals.pages import PageError, Pages
from approvals.ports import RunResumer
from approvals.tokens import AttestationClaims, LinkExpired, LinkInvalid
from offboarding.domain import audit
from offboarding.domain.cases import get_plan, leaver_view
from offboarding.domain.models import (
    TERMINAL_STATUSES,
    Attestation,
    Case,
    PlanStatus,
    RevocationPlanRecord,
)
from offboarding.domain.plan import PlanStep, RevocationPlan

CSRF_COOKIE = "offboarding_attest_csrf"


@dataclass
class Opened:
    claims: AttestationClaims
    row: Attestation
    case: Case
    record: RevocationPlanRecord
    step: PlanStep


def attestation_router(
    services: AttestationPorts,
    gateway: RunResumer,
    *,
    wake_dispatcher: Callable[[], None] = lambda: None,
) -> APIRouter:
    router = APIRouter(prefix="/attest", tags=["attestation pages"], include_in_schema=False)
    engine = services.engine

    pages = Pages(services)
    language, page, error_page = pages.language, pages.page, pages.error

    def open_link(token: str) -> Opened:
        try:
            claims = services.attestations.read(token)
        except LinkExpired as exc:
            raise PageError("expired", 410) from exc
        except LinkInvalid as exc:
            raise PageError("invalid", 400) from exc
        with Session(engine, expire_on_commit=False) as session:
            row = session.get(Attestation, claims.attestation_id)
            case = session.get(Case, claims.case_id)
        if (
            row is None
            or case is None
            or row.case_id != case.id
            or row.assignee_id != claims.assignee_id
            or row.grant_key != claims.grant_key
        ):
            raise PageError("invalid", 400)
        if row.attested_at is not None:
            raise PageError("attested", 409, language=row.language)
        record = get_plan(engine, row.plan_id)
        if record is None or record.status != PlanStatus.APPROVED:
            raise PageError("step_closed", 409, language=row.language)
        if case.status in TERMINAL_STATUSES:
            raise PageError("step_closed", 409, language=row.language)
        plan = RevocationPlan.from_canonical(record.canonical)
        step = next((s for s in manual_steps(plan) if s.grant.key == row.grant_key), None)
        if step is None:
            raise PageError("invalid", 400)
        return Opened(claims, row, case, record, step)

    def view_context(opened: Opened) -> dict[str, Any]:
        person = services.people.find_person(opened.row.assignee_id)
        return {
            **step_context(opened.case, opened.step, opened.row),
            "assignee": {
                "employee_id": opened.row.assignee_id,
                "display_name": person.display_name if person else opened.row.assignee_id,
            },
        }

    @router.get("/{token}", response_class=HTMLResponse)
    async def confirm(request: Request, token: str) -> HTMLResponse:
        try:
            opened = await run_in_threadpool(open_link, token)
        except PageError as error:
            return error_page(request, error, language(request, error.language))
        lang = language(request, opened.row.language)
        nonce, csrf = services.attestations.new_csrf(opened.row.id)
        context = await run_in_threadpool(view_context, opened)
        await run_in_threadpool(
            partial(
                audit.record,
                engine,
                action="attestation.viewed",
                actor=f"employee:{opened.row.assignee_id}",
                case_id=opened.case.id,
                details={"attestation_id": opened.row.id, "step": opened.row.grant_key},
            )
        )
        response = page(
            request,
            "attestation_confirm",
            lang,
            action_url=str(request.url.remove_query_params("lang")),
            csrf_token=csrf,
            **context,
        )
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/attest",
        )
        return response

    @router.post("/{token}", response_class=HTMLResponse)
    async def attested(
        request: Request,
        token: str,
        remark: Annotated[str, Form(max_length=2000)] = "",
        csrf_token: Annotated[str, Form()] = "",
        csrf_cookie: Annotated[str | None, Cookie(alias=CSRF_COOKIE)] = None,
    ) -> HTMLResponse:
        lang = language(request, None)
        try:
            opened = await run_in_threadpool(open_link, token)
            lang = language(request, opened.row.language)
            if not services.attestations.check_csrf(csrf_token, csrf_cookie, opened.row.id):
                raise PageError(
                    "bad_request",
                    400,
                    "the form expired or came from elsewhere; open the link again",
                )
            try:
                await run_in_threadpool(
                    partial(attest, services, opened.row.id, remark=remark.strip())
                )
            except AlreadyAttested as exc:
                raise PageError("attested", 409, language=opened.row.language) from exc
            still_open = await run_in_threadpool(unattested, services, opened.record)
        except PageError as error:
            return error_page(
                request, error, language(request, error.language) if error.language else lang
            )
        if still_open:
            next_key = "others_open"
        else:
            resumed = await hand_over(
                gateway,
                engine,
                opened.case,
                {"case_id": opened.case.id},
                {"why": ATTESTED},
            )
            if not resumed:
                wake_dispatcher()
            next_key = "completing" if resumed else "resume_pending"
        return page(
            request,
            "attestation_result",
            lang,
            switch_url=None,
            leaver=leaver_view(opened.case),
            case_id=opened.case.id,
            step=opened.step.grant.label,
            next_steps_key=next_key,
        )

    return router
