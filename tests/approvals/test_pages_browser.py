"""The approval pages in a real browser, opened from the link in the email the approver received.

Every test drives the whole service (HRIS intake → Prefect run → email → page → decision) and
checks the outcome where it lands: the page itself, the Prefect run, the database and slapd.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import ldap3
import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright
from sqlmodel import Session, select
from support import (
    can_bind,
    flow_run,
    groups_with,
    is_locked,
    link_in,
    run_of,
    send_leaver,
    text_of,
    wait_for_state,
)

from offboarding.domain.cases import latest_plan
from offboarding.domain.models import ApprovalDecision, Case, CaseStatus

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 30_000
RUN_TIMEOUT_S = 90

# demo employees in groups who are neither managers nor leavers in other test modules
THIJS = ("E1008", "tbos", "Thijs Bos")
SEM = ("E1012", "svanleeuwen", "Sem van Leeuwen")
SOPHIE = ("E1019", "svandermeer", "Sophie van der Meer")
DAAN = ("E1002", "ddeboer", "Daan de Boer")
REQUESTER_NAME = "Hanna Bakker"

# what a manager reads, per page language
WORDING = {
    "nl": {
        "approve": "Goedkeuren en toegang intrekken",
        "reject": "Afwijzen",
        "approved": "Goedgekeurd",
        "rejected": "Afgewezen",
        "revoking": "De toegang wordt nu ingetrokken.",
        "nothing_revoked": "Er wordt niets ingetrokken.",
        "not_processed": "Je besluit kon niet worden verwerkt",
        "already_used": "Deze link is al gebruikt",
        "already_decided": "Er is al over dit verzoek beslist",
    },
    "en": {
        "approve": "Approve and revoke access",
        "reject": "Reject",
        "approved": "Approved",
        "rejected": "Rejected",
        "revoking": "The access is being revoked now.",
        "nothing_revoked": "Nothing will be revoked.",
        "not_processed": "Your decision could not be processed",
        "already_used": "This link has already been used",
        "already_decided": "This request has already been decided",
    },
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    yield context.new_page()
    context.close()


@dataclass(frozen=True)
class Requested:
    """An offboarding the requester filed, once every approver has been emailed."""

    case_id: str
    flow_run_id: str
    emails: list[EmailMessage]


def request_offboarding(stack, leaver: tuple[str, str, str]) -> Requested:  # type: ignore[no-untyped-def]
    employee_id, uid, name = leaver
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    # the run pauses only after it has mailed every eligible manager
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED", timeout=RUN_TIMEOUT_S)
    emails = stack.mailbox.wait_for(
        lambda m: case_id in text_of(m) and "/approvals/" in text_of(m), timeout=RUN_TIMEOUT_S
    )
    return Requested(case_id, flow_run_id, emails)


def recipient(message: EmailMessage) -> str:
    return message["To"].addresses[0].addr_spec  # type: ignore[no-any-return]


def preferred_language(conn: ldap3.Connection, base: str, address: str) -> str:
    conn.search(
        base,
        f"(mail={ldap3.utils.conv.escape_filter_chars(address)})",
        attributes=["preferredLanguage"],
    )
    assert len(conn.entries) == 1, address
    return str(conn.entries[0]["preferredLanguage"].value)


def html_lang(page: Page) -> str:
    return page.evaluate("document.documentElement.lang")  # type: ignore[no-any-return]


def decisions_for(stack, case_id: str) -> list[ApprovalDecision]:  # type: ignore[no-untyped-def]
    with Session(stack.engine) as session:
        return list(
            session.exec(select(ApprovalDecision).where(ApprovalDecision.case_id == case_id)).all()
        )


def case_status(stack, case_id: str) -> CaseStatus:  # type: ignore[no-untyped-def]
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case.status


def reject_with_reason(page: Page, reason: str) -> None:
    page.fill("#reason", reason)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#reject-button")
    assert posted.value.status == 200, posted.value.text()
    page.wait_for_load_state()


def test_manager_approves_in_the_browser(stack, page: Page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, uid, name = THIJS
    dn = f"uid={uid},{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    groups_before = groups_with(admin, stack.directory.groups_base, dn, uid)
    assert groups_before, "the leaver should start in some groups"
    assert not is_locked(admin, dn)

    requested = request_offboarding(stack, THIJS)
    message = requested.emails[0]
    plan = latest_plan(stack.engine, requested.case_id)
    assert plan is not None

    web_url = stack.running.web_url
    seen: list[str] = []

    def remember(request: Request) -> None:
        seen.append(request.url)

    page.on("request", remember)
    opened = page.goto(link_in(message))
    assert opened is not None and opened.status == 200
    lang = html_lang(page)
    assert name in page.locator("h1").inner_text()
    assert REQUESTER_NAME in page.locator("main").inner_text()
    targets = set(page.locator("#plan tbody tr td:nth-child(4)").all_inner_texts())
    assert set(groups_before) <= targets
    assert targets - set(groups_before) == {dn}  # the rest is the leaver's own account
    fingerprint = page.locator("#plan-fingerprint").inner_text()
    assert fingerprint == plan.plan_hash[:12]
    assert fingerprint in text_of(message)  # what the email told the manager to compare
    page.screenshot(path=tmp_path / "confirm.png", full_page=True)

    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#approve-button")
    assert posted.value.status == 200, posted.value.text()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == WORDING[lang]["approved"]
    assert WORDING[lang]["revoking"] in page.locator("#next-steps").inner_text()
    page.screenshot(path=tmp_path / "result.png", full_page=True)

    assert seen, "the browser made no requests"
    outside = [url for url in seen if not url.startswith(f"{web_url}/")]
    assert not outside, f"the pages load resources from elsewhere: {outside}"
    for shot in ("confirm.png", "result.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG"), shot
        assert (tmp_path / shot).stat().st_size > 1000, shot

    run = wait_for_state(
        stack.running.api_url,
        requested.flow_run_id,
        "COMPLETED",
        "FAILED",
        "CRASHED",
        timeout=RUN_TIMEOUT_S,
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert case_status(stack, requested.case_id) == CaseStatus.COMPLETED
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert is_locked(admin, dn)
    admin.unbind()


def test_page_speaks_the_approvers_language_and_switches(stack, page: Page) -> None:  # type: ignore[no-untyped-def]
    requested = request_offboarding(stack, SEM)
    admin = stack.directory.admin_connection()
    languages = {
        recipient(m): preferred_language(admin, stack.directory.users_base, recipient(m))
        for m in requested.emails
    }
    admin.unbind()
    assert set(languages.values()) == {"nl", "en"}, languages  # the demo org asks both

    for message in requested.emails:
        language = languages[recipient(message)]
        other = "en" if language == "nl" else "nl"
        opened = page.goto(link_in(message))
        assert opened is not None and opened.status == 200
        assert html_lang(page) == language, recipient(message)
        assert page.locator("#approve-button").inner_text() == WORDING[language]["approve"]

        page.click(f"header a[hreflang={other}]")
        page.wait_for_load_state()
        assert html_lang(page) == other
        assert page.locator("#approve-button").inner_text() == WORDING[other]["approve"]
        assert page.locator("#reject-button").inner_text() == WORDING[other]["reject"]

        page.click(f"header a[hreflang={language}]")
        page.wait_for_load_state()
        assert html_lang(page) == language
        assert page.locator("#reject-button").inner_text() == WORDING[language]["reject"]

    # looking, in any language, decides nothing
    assert flow_run(stack.running.api_url, requested.flow_run_id)["state"]["type"] == "PAUSED"
    assert decisions_for(stack, requested.case_id) == []


def test_reject_needs_a_reason_and_keeps_all_access(stack, page: Page) -> None:  # type: ignore[no-untyped-def]
    _, uid, name = SOPHIE
    dn = f"uid={uid},{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    groups_before = groups_with(admin, stack.directory.groups_base, dn, uid)
    assert groups_before
    assert can_bind(stack.directory.url, dn, stack.password)

    requested = request_offboarding(stack, SOPHIE)
    link = link_in(requested.emails[0])
    page.goto(link)
    lang = html_lang(page)

    assert page.input_value("#reason") == ""
    if page.locator("#reason").evaluate("el => el.required"):
        page.click("#reject-button")  # the browser refuses to submit
        assert page.locator("#reason").evaluate("el => el.validity.valueMissing")
        assert page.url == link
    else:
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.click("#reject-button")
        assert posted.value.status == 400
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == WORDING[lang]["not_processed"]
        assert page.locator("form").count() == 0
        page.go_back()  # what the error page tells the manager to do
        page.reload()
    assert flow_run(stack.running.api_url, requested.flow_run_id)["state"]["type"] == "PAUSED"
    assert decisions_for(stack, requested.case_id) == []

    reason = f"The contract of {name} was extended until the end of the quarter."
    reject_with_reason(page, reason)
    assert page.locator("h1").inner_text() == WORDING[lang]["rejected"]
    assert name in page.locator("[role=status]").inner_text()
    assert WORDING[lang]["nothing_revoked"] in page.locator("#next-steps").inner_text()

    run = wait_for_state(
        stack.running.api_url,
        requested.flow_run_id,
        "COMPLETED",
        "FAILED",
        "CRASHED",
        timeout=RUN_TIMEOUT_S,
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert case_status(stack, requested.case_id) == CaseStatus.REJECTED
    assert [(d.decision, d.reason) for d in decisions_for(stack, requested.case_id)] == [
        ("reject", reason)
    ]
    # the result page promised the requester an email with the reason
    stack.mailbox.wait_for(
        lambda m: (
            requested.case_id in text_of(m)
            and recipient(m) == "hbakker@example.test"
            and reason in text_of(m)
        ),
        timeout=RUN_TIMEOUT_S,
    )
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == groups_before
    assert not is_locked(admin, dn)
    assert can_bind(stack.directory.url, dn, stack.password)
    admin.unbind()


def test_used_link_shows_already_used_not_a_form(stack, page: Page) -> None:  # type: ignore[no-untyped-def]
    # one open case per employee: Sem's (language test) may still be waiting
    requested = request_offboarding(stack, DAAN)
    used, other = requested.emails[0], requested.emails[1]
    page.goto(link_in(used))
    reject_with_reason(page, "Daan stays: the termination was entered by mistake.")

    reopened = page.goto(link_in(used))
    assert reopened is not None and reopened.status == 409
    lang = html_lang(page)
    assert page.locator("h1").inner_text() == WORDING[lang]["already_used"]
    assert page.locator("form").count() == 0
    assert page.locator("#approve-button, #reject-button").count() == 0

    # another manager's link for the same plan no longer offers a decision either
    theirs = page.goto(link_in(other))
    assert theirs is not None and theirs.status == 409
    assert page.locator("h1").inner_text() == WORDING[html_lang(page)]["already_decided"]
    assert page.locator("form").count() == 0

    run = wait_for_state(
        stack.running.api_url,
        requested.flow_run_id,
        "COMPLETED",
        "FAILED",
        "CRASHED",
        timeout=RUN_TIMEOUT_S,
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert len(decisions_for(stack, requested.case_id)) == 1
