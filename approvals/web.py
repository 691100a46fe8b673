"""The approval pages. A GET only shows; a POST with a CSRF token decides.

Mail link scanners fetch links, so nothing on GET changes a case. With `approver_sign_in`
set, holding the link is not enough: the page asks the approver to sign in with Microsoft
Entra ID first (`approvals.signin`), and decides only for the account the link was sent to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Cookie, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from sqlalchemy import update
from sqlmodel import Session, col, select

from approvals.decided_elsewhere import tell_other_approvers
from approvals.decisions import Settlement, settle
from approvals.deputies import RuleInputs, rule_inputs
from approvals.deputy_pages import DeputyPorts, deputy_router
from approvals.handover import hand_over
from approvals.pages import PageError, Pages
from approvals.ports import RunResumer
from approvals.reminders import FollowUpPorts
from approvals.requests import decision_context
from approvals.rules import (
    REFUSAL_TEXT,
    DecisionClaim,
    Verdict,
    acting_for,
    independent_count,
    refusals,
    ties_between,
)
from approvals.signin import (
    ApproverSignIn,
    SignedIn,
    SignInNeeded,
    SignInPages,
    configured_sign_in,
)
from approvals.tokens import LinkClaims, LinkExpired, LinkInvalid, SignedDecision
from offboarding.domain import audit
from offboarding.domain.cases import decisions_on, latest_plan, leaver_view
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    Case,
    CaseStatus,
    Decision,
    as_utc,
    utcnow,
)
from offboarding.domain.plan import RevocationPlan

log = structlog.get_logger(__name__)
CSRF_COOKIE = "offboarding_csrf"


@dataclass
class Opened:
    claims: LinkClaims
    request: ApprovalRequest
    case: Case
    plan: RevocationPlan
    settlement: Settlement


def approvals_counted(
    services: FollowUpPorts, case: Case, plan_hash: str, settlement: Settlement
) -> int:
    """Approvals on the plan that count now (a manager and their deputy once)."""
    refused = {stored.id for stored, _ in settlement.refused}
    valid = [
        d
        for d in decisions_on(services.engine, case.id, plan_hash)
        if d.id not in refused and d.decision == Decision.APPROVE
    ]
    people = rule_inputs(services, case)
    ties = ties_between(people.deputies, [(d.approver_id, as_utc(d.decided_at)) for d in valid])
    return independent_count(sorted({d.approver_id.strip().casefold() for d in valid}), ties)


def approvals_router(
    services: DeputyPorts,
    gateway: RunResumer,
    *,
    wake_dispatcher: Callable[[], None] = lambda: None,
    sign_in: ApproverSignIn | None = None,
) -> APIRouter:
    """The pages; `sign_in` (default: as the settings say) makes approvers sign in first."""
    router = APIRouter(prefix="/approvals", tags=["approval pages"], include_in_schema=False)
    engine = services.engine
    sign_in = sign_in or configured_sign_in(services.settings)
    # a manager names a deputy on /approvals/deputy/{token} (two segments: no clash below)
    router.include_router(deputy_router(services))

    pages = Pages(services)
    language, page, error_page = pages.language, pages.page, pages.error

    def open_link(token: str) -> Opened:
        try:
            claims = services.links.read(token)
        except LinkExpired as exc:
            raise PageError("expired", 410) from exc
        except LinkInvalid as exc:
            raise PageError("invalid", 400) from exc
        with Session(engine, expire_on_commit=False) as session:
            req = session.get(ApprovalRequest, claims.request_id)
            case = session.get(Case, claims.case_id)
        if (
            req is None
            or case is None
            or req.case_id != claims.case_id
            or req.approver_id != claims.approver_id
            or req.plan_hash != claims.plan_hash
        ):
            raise PageError("invalid", 400)
        lang = req.language
        if req.used_at is not None:
            raise PageError("already_used", 409, language=lang)
        if utcnow() > req.expires_at:
            raise PageError("expired", 410, language=lang)
        if case.status == CaseStatus.CANCELLED:
            raise PageError("withdrawn", 410, language=lang)
        if case.status != CaseStatus.AWAITING_APPROVAL:
            raise PageError("already_decided", 409, language=lang)
        current = latest_plan(engine, case.id)
        if current is None or current.plan_hash != claims.plan_hash:
            raise PageError("plan_changed", 409, language=lang)
        settlement = settle(services, case, current)
        if settlement.verdict == Verdict.APPROVED:  # N of M reached: nothing left to do
            raise PageError("enough_approvals", 409, language=lang)
        if settlement.verdict != Verdict.PENDING:
            raise PageError("already_decided", 409, language=lang)
        return Opened(
            claims, req, case, RevocationPlan.from_canonical(current.canonical), settlement
        )

    gate = None
    if sign_in is not None:
        gate = SignInPages(sign_in, pages, services, lambda token: open_link(token).request)
        router.include_router(gate.router())  # /approvals/signin/callback

    def claim_of(opened: Opened) -> DecisionClaim:
        return DecisionClaim(
            approver_id=opened.request.approver_id,
            requester_id=opened.case.requested_by,
            leaver_id=opened.case.employee_id,
            plan_hash=opened.claims.plan_hash,
        )

    def view_context(opened: Opened) -> dict[str, Any]:
        approver = services.people.find_person(opened.request.approver_id)
        return {
            **decision_context(services, opened.case, opened.plan),
            "approver": {
                "employee_id": opened.request.approver_id,
                "display_name": approver.display_name if approver else opened.request.approver_id,
            },
            "expires_at": opened.request.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            "approvals": {
                "given": approvals_counted(
                    services, opened.case, opened.claims.plan_hash, opened.settlement
                ),
                "required": services.policy.required_for(urgent=opened.case.urgent),
            },
            "deputy_for": deputy_names(opened, rule_inputs(services, opened.case)),
        }

    def deputy_names(opened: Opened, people: RuleInputs) -> list[str]:
        """Whom the link holder stands in for, when asked as a deputy (not in their own right)."""
        if opened.request.approver_id.strip().casefold() in {
            a.strip().casefold() for a in people.approvers
        }:
            return []
        names = []
        for manager_id in acting_for(
            claim_of(opened), managers=people.approvers, deputies=people.deputies, at=utcnow()
        ):
            manager = services.people.find_person(manager_id)
            names.append(manager.display_name if manager else manager_id)
        return names

    @router.get("/{token}", response_class=HTMLResponse)
    async def confirm(request: Request, token: str) -> HTMLResponse:
        try:
            opened = await run_in_threadpool(open_link, token)
        except PageError as error:
            return error_page(request, error, language(request, error.language))
        lang = language(request, opened.request.language)
        identity = None
        if gate is not None:
            identity = gate.who(request)
            if identity is None or not identity.is_for(opened.request.approver_email):
                return await gate.ask(request, token, opened.request, lang, identity)
        nonce, csrf = services.links.new_csrf(opened.request.id)
        context = await run_in_threadpool(view_context, opened)
        await run_in_threadpool(
            partial(
                audit.record,
                engine,
                action="approval.viewed",
                actor=f"employee:{opened.request.approver_id}",
                case_id=opened.case.id,
                details={
                    "request_id": opened.request.id,
                    "plan_hash": opened.claims.plan_hash,
                    **({"signed_in_as": identity.value} if identity else {}),
                },
            )
        )
        response = page(
            request,
            "approval_confirm",
            lang,
            action_url=str(request.url.remove_query_params("lang")),
            csrf_token=csrf,
            signed_in_as=identity.value if identity else None,
            **context,
        )
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/approvals",
        )
        return response

    @router.post("/{token}", response_class=HTMLResponse)
    async def decide(
        request: Request,
        token: str,
        decision: Annotated[str, Form()] = "",
        reason: Annotated[str, Form(max_length=2000)] = "",
        csrf_token: Annotated[str, Form()] = "",
        csrf_cookie: Annotated[str | None, Cookie(alias=CSRF_COOKIE)] = None,
    ) -> HTMLResponse:
        lang = language(request, None)
        identity = None
        try:
            opened = await run_in_threadpool(open_link, token)
            lang = language(request, opened.request.language)
            if not services.links.check_csrf(csrf_token, csrf_cookie, opened.request.id):
                raise PageError(
                    "bad_request",
                    400,
                    "the form expired or came from elsewhere; open the link again",
                )
            if gate is not None:
                identity = gate.who(request)
                if identity is None or not identity.is_for(opened.request.approver_email):
                    raise SignInNeeded(identity)
            if decision not in (Decision.APPROVE, Decision.REJECT):
                raise PageError("bad_request", 400, "choose approve or reject")
            reason = reason.strip()
            if decision == Decision.REJECT and not reason:
                raise PageError("bad_request", 400, "a reason is required to reject")
            recorded, waiting = await run_in_threadpool(
                record_decision, opened, Decision(decision), reason, identity
            )
        except SignInNeeded as needed:
            assert gate is not None
            await run_in_threadpool(
                partial(gate.refuse, opened.request, needed.identity, by="approval page")
            )
            return await gate.ask(request, token, opened.request, lang, needed.identity)
        except PageError as error:
            return error_page(
                request, error, language(request, error.language) if error.language else lang
            )
        # an approval that leaves the plan short of approvals (`waiting`) is not handed to
        # the run: it would only wake, find the plan undecided and wait again
        resumed = not waiting and await hand_over(
            gateway,
            engine,
            opened.case,
            recorded.model_dump(),
            {"decision_id": recorded.decision_id},
        )
        await run_in_threadpool(tell_others, opened, recorded.decision_id)
        if not waiting and not resumed:
            wake_dispatcher()  # it hands the decision over as soon as the run waits for it
        if decision == Decision.REJECT:
            next_key = "rejected"  # nothing is revoked, whenever the run hears of it
        elif waiting:
            next_key = "more_approvals"
        else:
            next_key = "revoking" if resumed else "resume_pending"
        return page(
            request,
            "approval_result",
            lang,
            switch_url=None,  # the page's URL is the used link: switching would reopen it
            decision=decision,
            leaver=leaver_view(opened.case),
            case_id=opened.case.id,
            next_steps_key=next_key,
        )

    def more_approvals_needed(opened: Opened, people: RuleInputs) -> bool:
        """The decisions recorded on the plan the link is for do not settle it yet (the
        policy asks for more approvals than were given). With the people the decision was
        checked against: the page needs the directory no more once the decision is stored."""
        record = latest_plan(engine, opened.case.id)
        if record is None or record.plan_hash != opened.claims.plan_hash:
            return False  # the run decides what a decision on another plan means
        return settle(services, opened.case, record, people).verdict == Verdict.PENDING

    def tell_others(opened: Opened, decision_id: str) -> None:
        """Once the plan is decided, the other managers asked hear it (never twice)."""
        record = latest_plan(engine, opened.case.id)
        with Session(engine, expire_on_commit=False) as session:
            stored = session.get(ApprovalDecision, decision_id)
        if record is None or stored is None or stored.plan_hash != record.plan_hash:
            return
        try:
            tell_other_approvers(services, opened.case, record, stored)
        except Exception as exc:  # noqa: BLE001 - a courtesy: the decision stands either way
            log.warning("other approvers not told", case_id=opened.case.id, problem=str(exc))

    def record_decision(
        opened: Opened, decision: Decision, reason: str, identity: SignedIn | None
    ) -> tuple[SignedDecision, bool]:
        """The decision stored and signed, and whether the plan still needs more approvals."""
        case, req = opened.case, opened.request
        actor = f"employee:{req.approver_id}"
        people = rule_inputs(services, case)
        broken = refusals(
            claim_of(opened),
            managers=people.approvers,
            current_plan_hash=opened.plan.plan_hash,
            deputies=people.deputies,
            at=utcnow(),
        )
        if broken:
            texts = [REFUSAL_TEXT[r] for r in broken]
            audit.record(
                engine,
                action="decision.refused",
                actor=actor,
                outcome="refused",
                case_id=case.id,
                details={
                    "request_id": req.id,
                    "refusals": [r.value for r in broken],
                    "by": "approval page",
                },
            )
            raise PageError("not_allowed", 403, "; ".join(texts))

        def claim(session: Session) -> ApprovalDecision:
            """Use the link once, store the decision and its audit event: all or nothing."""
            claimed = session.execute(
                update(ApprovalRequest)
                .where(col(ApprovalRequest.id) == req.id, col(ApprovalRequest.used_at).is_(None))
                .values(used_at=utcnow())
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                raise PageError("already_used", 409)
            already = session.exec(
                select(ApprovalDecision).where(
                    ApprovalDecision.case_id == case.id,
                    ApprovalDecision.plan_hash == req.plan_hash,
                    ApprovalDecision.approver_id == req.approver_id,
                )
            ).first()
            if already is not None:
                raise PageError("already_used", 409)
            stored = ApprovalDecision(
                case_id=case.id,
                request_id=req.id,
                plan_hash=req.plan_hash,
                approver_id=req.approver_id,
                decision=decision,
                reason=reason,
            )
            session.add(stored)
            audit.append(
                session,
                action="decision.recorded",
                actor=actor,
                outcome=decision.value,
                case_id=case.id,
                details={
                    "decision_id": stored.id,
                    "plan_hash": req.plan_hash,
                    "reason": reason,
                    # how the approver was known: by sign-in, or (absent) by holding the link
                    **({"identity": identity.evidence()} if identity else {}),
                },
            )
            return stored

        record = audit.in_transaction(engine, claim)
        signed = services.decisions.sign(
            SignedDecision(
                decision_id=record.id,
                case_id=case.id,
                plan_hash=req.plan_hash,
                approver_id=req.approver_id,
                decision=decision.value,
            )
        )
        return signed, more_approvals_needed(opened, people)

    return router
