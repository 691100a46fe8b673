"""Approvers prove who they are by signing in with Microsoft Entra ID before they decide.

The app runs as the service builds it (`create_app`), over a real directory (slapd); the
authority is `entra_authority`, a fake of Microsoft's identity platform on the wire (HTTPS,
its own CA), so MSAL's real authorization code flow with PKCE runs end to end. The browser
is a TestClient for the service plus an httpx client for the authority: the sign-in link
on the page is followed to the authority, and its redirect back to the service.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from approvals_support import open_case
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session, select
from support import csrf_of

from approvals.requests import IssuedLink, request_approvals
from approvals.signin import FLOW_COOKIE, SESSION_COOKIE
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.audit import events_for_case
from offboarding.domain.cases import set_status
from offboarding.domain.models import ApprovalDecision, ApprovalRequest, Case, CaseStatus
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import EntraSignInSettings, Settings
from offboarding.wiring.web import create_app
from tests.approvals.entra_authority import EntraAuthority, running_authority

BASE = "http://testserver"
CALLBACK = f"{BASE}/approvals/signin/callback"
LARS = "lsmit@example.test"  # E1004, a manager; his language is Dutch
THIJS = "tbos@example.test"  # E1008, not a manager


class PrefectBusy(RunGateway):
    """The run is not reachable now: the decision stays recorded for the dispatcher."""

    async def resume(self, flow_run_id, run_input, *, wait_seconds=5.0):  # type: ignore[no-untyped-def, override]
        return False


@dataclass(frozen=True)
class Event:
    actor: str
    outcome: str
    details: dict[str, Any]


@dataclass
class Stack:
    services: Services
    case: Case
    links: dict[str, str]  # approver address -> path of their link
    authority: EntraAuthority | None

    def client(self) -> TestClient:
        return TestClient(create_app(self.services, PrefectBusy("none/none"), dispatch=False))

    def actions(self) -> list[str]:
        return [e.action for e in events_for_case(self.services.engine, self.case.id)]

    def events(self, action: str) -> list[Event]:
        return [
            Event(e.actor, e.outcome, json.loads(e.details))
            for e in events_for_case(self.services.engine, self.case.id)
            if e.action == action
        ]

    def decisions(self) -> list[ApprovalDecision]:
        with Session(self.services.engine) as session:
            return list(
                session.exec(
                    select(ApprovalDecision).where(ApprovalDecision.case_id == self.case.id)
                )
            )

    def used_links(self) -> int:
        with Session(self.services.engine) as session:
            requests = session.exec(
                select(ApprovalRequest).where(ApprovalRequest.case_id == self.case.id)
            )
            return sum(1 for r in requests if r.used_at is not None)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def stack_for(
    tmp_path: Path, directory: LocalDirectory, authority: EntraAuthority | None, base: str = BASE
) -> Stack:
    sign_in = None
    if authority is not None:
        sign_in = {
            "tenant_id": authority.tenant_id,
            "client_id": authority.client_id,
            "client_secret": authority.client_secret,
            "authority_host": authority.origin,
            "ca_file": str(authority.ca_file),
        }
    settings = Settings(
        home=tmp_path / "home",
        public_url=base,
        connectors=[
            directory.connector_config(managers_group=directory.org.managers_group_dn)  # type: ignore[attr-defined]
        ],
        approver_sign_in=sign_in,
    )
    services = build_services(settings)
    case, record = open_case(services, "E1042", "jdevries@example.test")
    set_status(services.engine, case.id, CaseStatus.AWAITING_APPROVAL)
    issued: list[IssuedLink] = request_approvals(services, case, record)  # type: ignore[arg-type]
    links = {link.approver.email: link.url.removeprefix(base) for link in issued}
    return Stack(services, case, links, authority)


@pytest.fixture
def authority() -> Iterator[EntraAuthority]:
    with running_authority([CALLBACK]) as running:
        yield running


@pytest.fixture
def stack(tmp_path: Path, directory: LocalDirectory, authority: EntraAuthority) -> Stack:
    return stack_for(tmp_path, directory, authority)


def sign_in_url(page: str) -> str:
    found = re.search(r'<a id="sign-in" href="([^"]+)"', page)
    assert found, "no sign-in link on the page"
    return html.unescape(found.group(1))


def at_authority(authority: EntraAuthority, url: str) -> str:
    """The browser at the authority: where it is sent back to (the callback with its query)."""
    assert url.startswith(f"{authority.origin}/{authority.tenant_id}/oauth2/v2.0/authorize?")
    with httpx.Client(verify=str(authority.ca_file)) as browser:
        answer = browser.get(url)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def sign_in(client: TestClient, authority: EntraAuthority, link: str) -> httpx.Response:
    """Open the link, follow "Sign in with Microsoft", come back: the callback's answer."""
    page = client.get(link)
    assert page.status_code == 200, page.text
    return client.get(at_authority(authority, sign_in_url(page.text)), follow_redirects=False)


def failure_reason(page: httpx.Response) -> str:
    found = re.search(r'<h1 id="failure" data-reason="(\w+)"', page.text)
    assert found, page.text
    return found.group(1)


def test_the_approver_signs_in_and_decides(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as("LSmit@Example.TEST", "Lars Smit")  # the address, in another case
    with stack.client() as client:
        first = client.get(stack.links[LARS])
        assert first.status_code == 200
        assert "csrf_token" not in first.text  # no form before the sign-in
        assert "Aanmelden met Microsoft" in first.text  # Lars reads Dutch
        back = client.get(at_authority(authority, sign_in_url(first.text)), follow_redirects=False)
        assert back.status_code == 303
        assert back.headers["location"] == f"{BASE}{stack.links[LARS]}"
        page = client.get(stack.links[LARS])
        assert page.status_code == 200
        assert re.search(
            r'id="signed-in-as"[^>]*>Aangemeld bij Microsoft als LSmit@Example\.TEST', page.text
        )
        result = client.post(
            stack.links[LARS], data={"decision": "approve", "csrf_token": csrf_of(page.text)}
        )
    assert result.status_code == 200, result.text

    asked = authority.authorize_requests[0]
    assert asked["code_challenge_method"] == "S256" and asked["login_hint"] == LARS
    assert set(asked["scope"].split()) == {"openid", "profile", "email"}  # no offline_access
    redeemed = authority.token_requests[0]
    assert redeemed["grant_type"] == "authorization_code"
    assert redeemed["redirect_uri"] == CALLBACK
    [decision] = stack.decisions()
    assert decision.approver_id == "E1004" and decision.decision == "approve"
    [recorded] = stack.events("decision.recorded")
    identity = recorded.details["identity"]
    assert identity["proven_by"] == "entra_sign_in"
    assert identity["claim"] == "preferred_username"
    assert identity["value"] == "LSmit@Example.TEST"
    assert identity["tenant_id"] == authority.tenant_id
    assert stack.events("approval.signed_in")[0].details["identity"]["value"] == identity["value"]


def test_the_cookies_are_http_only_lax_and_hold_no_secret_or_token(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as client:
        page = client.get(stack.links[LARS])
        flow = page.headers["set-cookie"]
        back = client.get(at_authority(authority, sign_in_url(page.text)), follow_redirects=False)
        session = ";".join(back.headers.get_list("set-cookie"))
    assert flow.startswith(f"{FLOW_COOKIE}=")
    for header in (flow, session):
        assert "HttpOnly" in header and "SameSite=lax" in header and "Path=/approvals" in header
        assert authority.client_secret not in header
    assert f"{SESSION_COOKIE}=" in session
    assert f'{FLOW_COOKIE}=""' in session  # the flow is used once
    assert "eyJ0eXAi" not in session and "eyJhbGci" not in session  # no JWT rides along


def test_someone_else_signing_in_is_refused_and_audited(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(THIJS, "Thijs Bos")
    with stack.client() as client:
        back = sign_in(client, authority, stack.links[LARS])
        assert back.status_code == 303
        page = client.get(stack.links[LARS])
    assert page.status_code == 403
    assert "csrf_token" not in page.text
    assert f'<strong id="signed-in-as">{THIJS}</strong>' in page.text
    assert "Lars Smit" in page.text and "Er is niets besloten" in page.text
    assert "prompt=select_account" in sign_in_url(page.text)  # pick the right account
    [refused] = stack.events("decision.refused")
    assert refused.actor == f"sign-in:{THIJS}" and refused.outcome == "refused"
    assert refused.details["refusals"] == ["signed_in_as_someone_else"]
    assert refused.details["link_for"] == LARS
    assert stack.decisions() == [] and stack.used_links() == 0


def test_a_decision_posted_after_signing_in_as_someone_else_is_refused(stack: Stack) -> None:
    """The form was opened signed in as Lars; the browser then signed in as Thijs."""
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as client:
        sign_in(client, authority, stack.links[LARS])
        form = client.get(stack.links[LARS])
        csrf = csrf_of(form.text)
        client.cookies.delete(SESSION_COOKIE)
        authority.sign_in_as(THIJS, "Thijs Bos")
        sign_in(client, authority, stack.links[LARS])
        refused = client.post(stack.links[LARS], data={"decision": "approve", "csrf_token": csrf})
        client.cookies.delete(SESSION_COOKIE)
        expired = client.post(stack.links[LARS], data={"decision": "approve", "csrf_token": csrf})
    assert refused.status_code == 403 and THIJS in refused.text
    assert expired.status_code == 401 and "Je aanmelding is verlopen" in expired.text
    assert stack.decisions() == [] and stack.used_links() == 0
    reasons = [e.details["refusals"] for e in stack.events("decision.refused")]
    assert reasons == [["signed_in_as_someone_else"]] * 2 + [["not_signed_in"]]
    assert [e.details["by"] for e in stack.events("decision.refused")][1:] == ["approval page"] * 2


def test_a_forged_state_is_refused_before_the_token_endpoint(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as client:
        page = client.get(stack.links[LARS])
        back = at_authority(authority, sign_in_url(page.text))
        forged = re.sub(r"state=[^&]+", "state=forged-by-someone", back)
        answer = client.get(forged, follow_redirects=False)
    assert answer.status_code == 400 and failure_reason(answer) == "state"
    assert "Het antwoord hoort niet bij deze aanmelding" in answer.text
    assert authority.token_requests == []
    assert SESSION_COOKIE not in client.cookies
    assert stack.decisions() == []
    assert stack.events("approval.sign_in_failed")[0].details["reason"] == "state"


def test_a_replayed_answer_is_refused(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as client:
        page = client.get(stack.links[LARS])
        flow = client.cookies[FLOW_COOKIE]
        back = at_authority(authority, sign_in_url(page.text))
        assert client.get(back, follow_redirects=False).status_code == 303
        client.cookies.delete(SESSION_COOKIE)
        again = client.get(back, follow_redirects=False)  # the flow cookie is gone
        client.cookies.set(FLOW_COOKIE, flow, path="/approvals")  # kept by an attacker
        replayed = client.get(back, follow_redirects=False)
    assert again.status_code == 400 and failure_reason(again) == "no_flow"
    assert replayed.status_code == 400 and failure_reason(replayed) == "refused"
    assert "invalid_grant: AADSTS54005" in replayed.text
    assert stack.decisions() == []


def test_a_code_redeemed_with_another_sign_ins_verifier_fails_pkce(stack: Stack) -> None:
    """A code intercepted from Lars's sign-in, brought back with the attacker's own flow."""
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as victim, stack.client() as attacker:
        victims = at_authority(authority, sign_in_url(victim.get(stack.links[LARS]).text))
        attackers = at_authority(authority, sign_in_url(attacker.get(stack.links[LARS]).text))
        code = re.search(r"code=([^&]+)", victims)
        assert code
        mixed = re.sub(r"code=[^&]+", f"code={code.group(1)}", attackers)
        answer = attacker.get(mixed, follow_redirects=False)
    assert answer.status_code == 400 and failure_reason(answer) == "refused"
    assert "invalid_grant: AADSTS501481" in answer.text
    assert SESSION_COOKIE not in attacker.cookies
    assert stack.decisions() == []


def test_an_expired_code_gives_a_clear_page_and_decides_nothing(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit")
    with stack.client() as client:
        page = client.get(stack.links[LARS])
        back = at_authority(authority, sign_in_url(page.text))
        authority.expire_codes()
        answer = client.get(back, follow_redirects=False)
        english = client.get(back + "&lang=en", follow_redirects=False)
    assert answer.status_code == 400 and failure_reason(answer) == "refused"
    assert "Microsoft heeft je niet aangemeld" in answer.text
    assert "invalid_grant: AADSTS70008: The provided authorization code" in answer.text
    assert "Trace ID" not in answer.text
    assert f'href="{BASE}{stack.links[LARS]}"' in answer.text  # start again from here
    assert failure_reason(english) == "no_flow"  # the flow was used up by the first answer
    assert stack.decisions() == [] and stack.used_links() == 0
    [failed] = stack.events("approval.sign_in_failed")
    assert failed.outcome == "refused" and "AADSTS70008" in failed.details["detail"]


def test_an_account_of_another_tenant_is_refused(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None
    authority.sign_in_as(LARS, "Lars Smit", tenant_id="0b0b0b0b-1111-2222-3333-444444444444")
    with stack.client() as client:
        answer = sign_in(client, authority, stack.links[LARS])
    assert answer.status_code == 403 and failure_reason(answer) == "tenant"
    assert stack.decisions() == []


def test_a_mail_scanner_following_every_link_decides_nothing(stack: Stack) -> None:
    authority = stack.authority
    assert authority is not None  # nobody at the keyboard: the authority answers access_denied
    with stack.client() as scanner:
        page = scanner.get(stack.links[LARS])
        answer = scanner.get(at_authority(authority, sign_in_url(page.text)))
        again = scanner.get(stack.links[LARS])
    assert answer.status_code == 400 and failure_reason(answer) == "refused"
    assert "access_denied" in answer.text
    assert again.status_code == 200 and "csrf_token" not in again.text
    assert stack.decisions() == [] and stack.used_links() == 0
    assert "approval.viewed" not in stack.actions()


def test_the_authority_unreachable_gives_a_clear_page(
    tmp_path: Path, directory: LocalDirectory
) -> None:
    with running_authority([CALLBACK]) as gone:
        assert gone.ca_file is not None
        gone.ca_file = Path(shutil.copy(gone.ca_file, tmp_path / "ca.pem"))
    stack = stack_for(tmp_path, directory, gone)  # stopped: its port answers nothing now
    with stack.client() as client:
        page = client.get(stack.links[LARS])
    assert page.status_code == 503 and failure_reason(page) == "unavailable"
    assert gone.origin in page.text
    assert stack.decisions() == []


def test_without_the_setting_the_link_is_the_proof(
    tmp_path: Path, directory: LocalDirectory
) -> None:
    stack = stack_for(tmp_path, directory, None)
    with stack.client() as client:
        page = client.get(stack.links[LARS])
        assert page.status_code == 200 and "sign-in" not in page.text
        result = client.post(
            stack.links[LARS], data={"decision": "approve", "csrf_token": csrf_of(page.text)}
        )
        callback = client.get("/approvals/signin/callback?code=x&state=y")
    assert result.status_code == 200
    assert [d.approver_id for d in stack.decisions()] == ["E1004"]
    [recorded] = stack.events("decision.recorded")
    assert "identity" not in recorded.details
    assert callback.status_code != 200 and "signin" not in "".join(stack.actions())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tenant_id", "contoso.onmicrosoft.com", "is not a tenant ID"),
        ("tenant_id", "common", "is not a tenant ID"),
        ("authority_host", "http://login.microsoftonline.com", "must be an https URL"),
        ("authority_host", "https://login.microsoftonline.com/tenant", "must be an https URL"),
    ],
)
def test_settings_name_what_is_wrong(field: str, value: str, message: str) -> None:
    good = {
        "tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": "not-logged-" + secrets.token_hex(8),
    }
    assert EntraSignInSettings(**good).authority_host == "https://login.microsoftonline.com"
    with pytest.raises(ValidationError, match=message) as raised:
        EntraSignInSettings(**{**good, field: value})
    assert good["client_secret"] not in str(raised.value)


@contextmanager
def serving(app: Any, sock: socket.socket) -> Iterator[None]:
    """The app on a real port, as `offboarding up` serves it."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.e2e
def test_in_a_real_browser_the_cookies_carry_the_sign_in_to_the_decision(
    tmp_path: Path, directory: LocalDirectory, authority: EntraAuthority
) -> None:
    """Chromium follows the authority's redirects itself: the SameSite=Lax cookies come
    back from the authority's site, and the decision form's POST carries them."""
    from playwright.sync_api import sync_playwright

    from tests.approvals.test_pages_browser import CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT_MS

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    authority.redirect_uris.append(f"{base}/approvals/signin/callback")
    stack = stack_for(tmp_path, directory, authority, base)
    authority.sign_in_as(LARS, "Lars Smit")
    app = create_app(stack.services, PrefectBusy("none/none"), dispatch=False)
    with serving(app, sock), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True)  # the authority's own CA
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = context.new_page()
        page.goto(base + stack.links[LARS])
        page.click("#sign-in")
        page.wait_for_selector("#approve-button")
        assert page.url == base + stack.links[LARS]
        page.click("#approve-button")
        page.wait_for_selector("h1")
        heading = page.inner_text("h1")
        browser.close()
    assert heading == "Goedgekeurd"
    assert [d.approver_id for d in stack.decisions()] == ["E1004"]
    [recorded] = stack.events("decision.recorded")
    assert recorded.details["identity"]["value"] == LARS
