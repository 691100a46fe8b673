"""A work instruction that asks for two approvals: the first is recorded and the run keeps
sleeping (waking it would only make it wait again); the second starts the revocation."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from conftest import Stack, start_stack
from support import csrf_of, decide, link_in, text_of, until, wait_for_state, waiting_case

from offboarding.domain.audit import events_for_case

pytestmark = pytest.mark.e2e

PAGES = Path(__file__).resolve().parents[2] / "templates" / "pages"
NEXT_STEPS = re.compile(r'<p id="next-steps">(.*?)</p>', re.DOTALL)


def next_step_texts(key: str) -> set[str]:
    """The page's "what happens next" text under `key`, in every language."""
    return {
        json.loads((PAGES / f"messages.{lang}.json").read_text())[f"result.next.{key}"]
        for lang in ("en", "nl")
    }


def is_request(message: EmailMessage, case_id: str) -> bool:
    return case_id in text_of(message) and "approvals/" in text_of(message)


def links_to_two_managers(stack: Stack, case_id: str) -> list[str]:
    """The approval links of the case, one per manager asked, once two have been asked."""

    def found() -> list[str]:
        mails = [m for m in stack.mailbox.messages if is_request(m, case_id)]
        links = list({str(m["To"]): link_in(m) for m in mails}.values())
        return links if len(links) >= 2 else []

    return until(found, "approval emails to two managers")


def next_steps_of(html: str) -> str:
    found = NEXT_STEPS.search(html)
    assert found, html[:500]
    return found.group(1).strip()


@pytest.fixture(scope="module")
def two_approvals_stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from start_stack(
        tmp_path_factory.mktemp("two-approvals"),
        None,
        smtp_server,
        policy={"required_approvals": 2},
    )


def test_the_first_of_two_approvals_leaves_the_run_asleep_and_the_second_revokes(
    two_approvals_stack: Stack,
) -> None:
    stack = two_approvals_stack
    case_id, flow_run_id, _ = waiting_case(stack, "E1014", "fbrouwer", "Finn Brouwer")

    links = links_to_two_managers(stack, case_id)
    asleep = wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")

    first = decide(links[0], "approve")
    assert first.status_code == 200, first.text
    assert next_steps_of(first.text) in next_step_texts("more_approvals")
    still = wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    assert still["state"]["id"] == asleep["state"]["id"]  # the same suspension: not woken
    actions = [e.action for e in events_for_case(stack.services.engine, case_id)]
    assert actions.count("decision.recorded") == 1
    assert "run.resumed" not in actions and "run.resume_pending" not in actions

    second = decide(links[1], "approve")
    assert second.status_code == 200, second.text
    assert next_steps_of(second.text) in next_step_texts("revoking") | next_step_texts(
        "resume_pending"
    )
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    actions = [e.action for e in events_for_case(stack.services.engine, case_id)]
    assert actions.count("decision.recorded") == 2
    assert actions.count("run.resumed") + actions.count("run.resume_pending") == 1


def test_two_approvals_posted_at_the_same_moment_revoke_once(two_approvals_stack: Stack) -> None:
    # Each page settles on what is committed after its own decision: the later commit sees
    # both, so at least one page hands the run over, and no page says more are needed
    # once both are in.
    stack = two_approvals_stack
    case_id, flow_run_id, _ = waiting_case(stack, "E1019", "svandermeer", "Sophie van der Meer")

    links = links_to_two_managers(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    together = threading.Barrier(2)

    def post(link: str) -> httpx.Response:
        with httpx.Client(timeout=60) as browser:  # as `decide`, the button pressed together
            page = browser.get(link)
            assert page.status_code == 200, page.text
            together.wait(timeout=60)
            return browser.post(
                link, data={"decision": "approve", "reason": "", "csrf_token": csrf_of(page.text)}
            )

    with ThreadPoolExecutor(2) as pool:
        pages = list(pool.map(post, links[:2]))
    assert [p.status_code for p in pages] == [200, 200], [p.text[:300] for p in pages]
    said = [next_steps_of(p.text) for p in pages]
    assert not all(text in next_step_texts("more_approvals") for text in said), said
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    actions = [e.action for e in events_for_case(stack.services.engine, case_id)]
    assert actions.count("decision.recorded") == 2
    assert actions.count("case.completed") == 1
    assert 1 <= actions.count("run.resumed") + actions.count("run.resume_pending") <= 2
