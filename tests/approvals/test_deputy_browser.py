"""Deputies and rejections in a real browser (Chromium), over the whole service: the signed
page where a manager names a deputy, the deputy approving from the link mailed to them
(the case completes), a rejection whose reason reaches the audit log and the mail, and a
mail scanner that follows the links and decides nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from email.message import EmailMessage

import httpx
import pytest
from conftest import start_stack
from playwright.sync_api import Browser, Page, sync_playwright
from sqlmodel import Session, select
from support import flow_run, link_in, run_of, send_leaver, text_of, wait_for_state

from offboarding.domain.audit import events_for_case
from offboarding.domain.models import ApprovalDecision, AuditEvent, Case, CaseStatus, Deputyship

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
RUN_TIMEOUT_S = 120
LARS, MILAN = "E1004", "E1016"  # a manager, and his deputy who is not a manager
MILAN_MAIL = "mdijkstra@example.test"
THIJS = ("E1008", "tbos", "Thijs Bos")
SOPHIE = ("E1019", "svandermeer", "Sophie van der Meer")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, smtp_server, new_postgres_database):  # type: ignore[no-untyped-def]
    yield from start_stack(
        tmp_path_factory.mktemp("deputy-stack"),
        new_postgres_database(),
        smtp_server,
        policy={"deputies_may_be_non_managers": True},
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def deputyships(stack) -> list[Deputyship]:  # type: ignore[no-untyped-def]
    with Session(stack.engine) as session:
        return list(session.exec(select(Deputyship)))


def request_offboarding(stack, leaver) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    response = send_leaver(stack, *leaver)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED", timeout=RUN_TIMEOUT_S)
    return case_id, flow_run_id


def mail_to(stack, address: str, case_id: str) -> EmailMessage:  # type: ignore[no-untyped-def]
    return stack.mailbox.wait_for(
        lambda m: address in str(m["To"]) and case_id in text_of(m) and "/approvals/" in text_of(m),
        timeout=RUN_TIMEOUT_S,
    )[0]


def scanner_follows(link: str) -> None:
    """What a mail security scanner does: GET the link (and follow redirects), nothing else."""
    with httpx.Client(timeout=30, follow_redirects=True) as scanner:
        assert scanner.get(link).status_code == 200
        assert scanner.head(link).status_code in (200, 405)


def test_a_manager_names_a_deputy_on_the_signed_page(stack, page: Page) -> None:  # type: ignore[no-untyped-def]
    assert stack.services.deputy_links is not None
    link = f"{stack.running.web_url}/approvals/deputy/{stack.services.deputy_links.issue(LARS)}"
    scanner_follows(link)
    assert deputyships(stack) == []  # looking names nobody

    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    assert "Lars Smit" in page.locator("main").inner_text()
    today = date.today()
    page.fill("#deputy_id", MILAN)
    page.fill("#valid_from", (today - timedelta(days=1)).isoformat())
    page.fill("#valid_until", (today + timedelta(days=7)).isoformat())
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#name-deputy-button")
    assert posted.value.status == 200, posted.value.text()
    page.wait_for_load_state()
    assert "Milan Dijkstra" in page.locator("#deputy-named").inner_text()

    [row] = deputyships(stack)
    assert (row.manager_id, row.deputy_id, row.named_by) == (LARS, MILAN, f"employee:{LARS}")
    with Session(stack.engine) as session:
        named = session.exec(select(AuditEvent).where(AuditEvent.action == "deputy.named")).all()
    assert [json.loads(e.details)["deputy_id"] for e in named] == [MILAN]

    # the same form again for an overlapping period is refused, in the page's words
    page.goto(link)
    page.fill("#deputy_id", "E1007")
    page.fill("#valid_from", today.isoformat())
    page.fill("#valid_until", (today + timedelta(days=2)).isoformat())
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#name-deputy-button")
    assert posted.value.status == 400
    assert page.locator("#deputy-problem").count() == 1
    assert len(deputyships(stack)) == 1


def test_the_deputy_approves_from_the_mailed_link_and_the_case_completes(  # type: ignore[no-untyped-def]
    stack, page: Page
) -> None:
    if not deputyships(stack):  # run alone: name him the way the CLI does
        from approvals.deputies import name_deputy
        from offboarding.domain.models import utcnow

        name_deputy(
            stack.services,
            manager_id=LARS,
            deputy_id=MILAN,
            starts_at=utcnow() - timedelta(hours=1),
            ends_at=utcnow() + timedelta(days=7),
            actor="operator:test",
        )
    case_id, flow_run_id = request_offboarding(stack, THIJS)
    link = link_in(mail_to(stack, MILAN_MAIL, case_id))

    scanner_follows(link)
    assert flow_run(stack.running.api_url, flow_run_id)["state"]["type"] == "PAUSED"
    with Session(stack.engine) as session:
        assert session.exec(select(ApprovalDecision)).all() == []

    opened = page.goto(link)
    assert opened is not None and opened.status == 200
    assert "Lars Smit" in page.locator("#deputy-for").inner_text()
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#approve-button")
    assert posted.value.status == 200, posted.value.text()

    run = wait_for_state(
        stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED", timeout=RUN_TIMEOUT_S
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        decisions = session.exec(
            select(ApprovalDecision).where(ApprovalDecision.case_id == case_id)
        ).all()
    assert case is not None and case.status == CaseStatus.COMPLETED
    assert [(d.approver_id, d.decision) for d in decisions] == [(MILAN, "approve")]


def test_a_rejection_reason_reaches_the_audit_log_and_the_mail(stack, page: Page) -> None:  # type: ignore[no-untyped-def]
    case_id, flow_run_id = request_offboarding(stack, SOPHIE)
    link = link_in(mail_to(stack, "ndegroot@example.test", case_id))
    scanner_follows(link)
    assert flow_run(stack.running.api_url, flow_run_id)["state"]["type"] == "PAUSED"

    reason = "Sophie's contract was extended; HR entered the wrong date."
    page.goto(link)
    page.fill("#reason", reason)
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#reject-button")
    assert posted.value.status == 200, posted.value.text()

    run = wait_for_state(
        stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED", timeout=RUN_TIMEOUT_S
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    events = {e.action: json.loads(e.details) for e in events_for_case(stack.engine, case_id)}
    assert events["decision.recorded"]["reason"] == reason
    assert events["case.rejected"]["reason"] == reason
    stack.mailbox.wait_for(
        lambda m: (
            "hbakker@example.test" in str(m["To"])
            and case_id in text_of(m)
            and reason in text_of(m)
        ),
        timeout=RUN_TIMEOUT_S,
    )
