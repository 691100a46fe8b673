"""The page where a manager names their deputy, behind a personal signed link, and the
mails around it: the link to the manager, and "you are the deputy" to the deputy.

Same rules as the approval pages: a GET only shows the form (mail scanners fetch links); a
POST with the CSRF token (cookie + form) names the deputy. The link is issued by
`offboarding deputy link MANAGER_ID` (mailed to the manager, or printed) and is valid for a
few days. Holding it is the proof: it is never logged or written to the audit log.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Protocol

import structlog
from fastapi import APIRouter, Cookie, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from approvals.deputies import (
    DeputyLinkSigner,
    DeputyProblem,
    current_deputyships,
    name_deputy,
    period_of_days,
)
from approvals.pages import PageError, Pages
from approvals.reminders import FollowUpPorts, deputies_due, local_time
from approvals.requests import IssuedLink
from approvals.tokens import LinkExpired, LinkInvalid
from connectors.base import Person
from offboarding.domain import audit
from offboarding.domain.models import Deputyship, as_utc, utcnow
from offboarding.notification.mail import MailError, OutgoingEmail
from offboarding.notification.rendering import pick_language, render_email

log = structlog.get_logger(__name__)
CSRF_COOKIE = "offboarding_deputy_csrf"
COOKIE_PATH = "/approvals/deputy"


class DeputyPorts(FollowUpPorts, Protocol):
    @property
    def deputy_links(self) -> DeputyLinkSigner | None: ...


def deputy_url(base_url: str, token: str) -> str:
    return f"{base_url}{COOKIE_PATH}/{token}"


def mail_deputy_link(services: DeputyPorts, manager: Person, *, actor: str) -> str:
    """Mail `manager` their personal link to the deputy page, in their language, and record
    that it went (`email.deputy_link`: to whom, never the link). The message id; a mail
    failure is raised (MailError) for the caller to report."""
    if services.deputy_links is None:
        raise DeputyProblem("this service issues no deputy links")
    if not manager.email:
        raise DeputyProblem(
            f"{manager.employee_id} has no email address in the people directory: the link "
            "cannot be mailed; add one, or print the link (--print) and hand it over",
            "no_email",
        )
    language = pick_language(manager.language, services.settings.default_language)
    valid_until = utcnow() + services.deputy_links.ttl
    rendered = render_email(
        services.templates,
        "deputy_link",
        language,
        {
            "manager": {"display_name": manager.display_name},
            "link": deputy_url(
                services.settings.base_url, services.deputy_links.issue(manager.employee_id)
            ),
            "expires_at": local_time(valid_until, services.settings.zone),
            "zone": str(services.settings.zone),
            "managers_only": not services.policy.deputies_may_be_non_managers,
        },
    )
    message_id = services.mailer.send(
        OutgoingEmail(
            to=[manager.email], subject=rendered.subject, text=rendered.text, html=rendered.html
        )
    )
    audit.record(
        services.engine,
        action="email.deputy_link",
        actor=actor,
        details={
            "to": manager.email,
            "manager_id": manager.employee_id,
            "language": language,
            "valid_until": valid_until.isoformat(),
            "message_id": message_id,
        },
    )
    return message_id


def tell_deputy(services: DeputyPorts, row: Deputyship) -> str | None:
    """Mail the deputy, in their language, for whom and for which period they act
    (`email.deputy_named`, once per deputyship). The address mailed; None when it was
    mailed before or could not be (recorded and logged: the deputyship stands)."""
    deputy = services.people.find_person(row.deputy_id)
    manager = services.people.find_person(row.manager_id)
    if deputy is None or not deputy.email:
        log.warning("deputy not told: no email address", deputyship_id=row.id)
        return None
    language = pick_language(deputy.language, services.settings.default_language)
    details = {"to": deputy.email, "deputyship_id": row.id, "language": language}
    claimed = audit.record(
        services.engine,
        action="email.deputy_named",
        actor="service",
        details=details,
        once_key=f"email.deputy_named:{row.id}",
    )
    if claimed is None:
        return None
    zone = services.settings.zone
    rendered = render_email(
        services.templates,
        "deputy_named",
        language,
        {
            "deputy": {"display_name": deputy.display_name},
            "manager": {
                "employee_id": row.manager_id,
                "display_name": manager.display_name if manager else row.manager_id,
            },
            "starts_at": local_time(as_utc(row.starts_at), zone),
            "ends_at": local_time(as_utc(row.ends_at), zone),
        },
    )
    try:
        services.mailer.send(
            OutgoingEmail(
                to=[deputy.email], subject=rendered.subject, text=rendered.text, html=rendered.html
            )
        )
    except MailError as exc:
        log.error("deputy not told", deputyship_id=row.id, error=str(exc))
        audit.record(
            services.engine,
            action="email.deputy_named",
            actor="service",
            outcome="failed",
            details={**details, "error": str(exc)},
        )
        return None
    return deputy.email


def after_naming(
    services: DeputyPorts, row: Deputyship, now: datetime | None = None
) -> list[IssuedLink]:
    """What follows a new deputyship: the deputy hears of it, and (when it is active)
    gets the links of cases already waiting for the manager. A failure here is logged:
    the deputyship stands, and the dispatcher's next pass asks the deputy anyway."""
    try:
        tell_deputy(services, row)
    except Exception as exc:  # noqa: BLE001 - the deputyship stands
        log.warning("deputy not told", deputyship_id=row.id, problem=f"{type(exc).__name__}: {exc}")
    try:
        return deputies_due(services, now or utcnow())
    except Exception as exc:  # noqa: BLE001 - the dispatcher's next pass tries again
        log.warning(
            "waiting cases not offered to the deputy", problem=f"{type(exc).__name__}: {exc}"
        )
        return []


def deputy_router(services: DeputyPorts) -> APIRouter:
    router = APIRouter(prefix="/deputy", include_in_schema=False)
    pages = Pages(services)

    def signer() -> DeputyLinkSigner:
        if services.deputy_links is None:
            raise PageError("invalid", 400)
        return services.deputy_links

    def open_link(token: str) -> tuple[str, str, str]:
        """(manager id, display name, language) of a genuine link's manager."""
        try:
            manager_id = signer().read(token)
        except LinkExpired as exc:
            raise PageError("expired", 410) from exc
        except LinkInvalid as exc:
            raise PageError("invalid", 400) from exc
        manager = services.people.find_person(manager_id)
        if manager is None:
            raise PageError("invalid", 400)
        language = manager.language or services.settings.default_language
        return manager.employee_id, manager.display_name, language

    def form_context(manager_id: str, name: str) -> dict[str, Any]:
        zone = services.settings.zone
        current = []
        for row in current_deputyships(services.engine, manager_id=manager_id):
            deputy = services.people.find_person(row.deputy_id)
            shown = deputy.display_name if deputy else row.deputy_id
            current.append(
                {
                    "deputy": f"{shown} ({row.deputy_id})",
                    "starts_at": local_time(as_utc(row.starts_at), zone),
                    "ends_at": local_time(as_utc(row.ends_at), zone),
                }
            )
        return {
            "manager": {"employee_id": manager_id, "display_name": name},
            "current": current,
            "managers_only": not services.policy.deputies_may_be_non_managers,
            "zone": str(zone),
        }

    def show_form(
        request: Request, manager_id: str, name: str, lang: str, problem: str, status: int
    ) -> HTMLResponse:
        nonce, csrf = signer().new_csrf(manager_id)
        response = pages.page(
            request,
            "deputy_form",
            lang,
            status,
            action_url=str(request.url.remove_query_params("lang")),
            csrf_token=csrf,
            problem=problem,
            **form_context(manager_id, name),
        )
        response.set_cookie(
            CSRF_COOKIE,
            nonce,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=COOKIE_PATH,
        )
        return response

    @router.get("/{token}", response_class=HTMLResponse)
    async def form(request: Request, token: str) -> HTMLResponse:
        try:
            manager_id, name, stored = await run_in_threadpool(open_link, token)
        except PageError as error:
            return pages.error(request, error, pages.language(request, None))
        lang = pages.language(request, stored)
        return await run_in_threadpool(show_form, request, manager_id, name, lang, "", 200)

    @router.post("/{token}", response_class=HTMLResponse)
    async def submit(
        request: Request,
        token: str,
        deputy_id: Annotated[str, Form(max_length=100)] = "",
        valid_from: Annotated[str, Form(max_length=20)] = "",
        valid_until: Annotated[str, Form(max_length=20)] = "",
        csrf_token: Annotated[str, Form()] = "",
        csrf_cookie: Annotated[str | None, Cookie(alias=CSRF_COOKIE)] = None,
    ) -> HTMLResponse:
        try:
            manager_id, name, stored = await run_in_threadpool(open_link, token)
            lang = pages.language(request, stored)
            if not signer().check_csrf(csrf_token, csrf_cookie, manager_id):
                raise PageError(
                    "bad_request", 400, "the form expired or came from elsewhere", language=lang
                )
        except PageError as error:
            return pages.error(request, error, pages.language(request, error.language))
        try:
            first, last = date.fromisoformat(valid_from), date.fromisoformat(valid_until)
        except ValueError:
            return await run_in_threadpool(show_form, request, manager_id, name, lang, "dates", 400)
        starts_at, ends_at = period_of_days(first, last, services.settings.zone)
        try:
            row = await run_in_threadpool(
                lambda: name_deputy(
                    services,
                    manager_id=manager_id,
                    deputy_id=deputy_id,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    actor=f"employee:{manager_id}",
                )
            )
        except DeputyProblem as problem:
            return await run_in_threadpool(
                show_form, request, manager_id, name, lang, problem.key, 400
            )
        # the deputy hears of it, and gets the links of cases already waiting (if active)
        await run_in_threadpool(after_naming, services, row)
        deputy = await run_in_threadpool(services.people.find_person, row.deputy_id)
        zone = services.settings.zone
        return pages.page(
            request,
            "deputy_result",
            lang,
            switch_url=None,  # a POST's answer: switching would only show the form again
            manager={"employee_id": manager_id, "display_name": name},
            deputy={
                "employee_id": row.deputy_id,
                "display_name": deputy.display_name if deputy else row.deputy_id,
            },
            starts_at=local_time(as_utc(row.starts_at), zone),
            ends_at=local_time(as_utc(row.ends_at), zone),
        )

    return router
