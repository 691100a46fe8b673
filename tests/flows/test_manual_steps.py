"""Attested manual steps, through the real service: planned and approved with the plan,
mailed to their assignees after approval, attested once through a signed link (a mail
scanner's GET decides nothing), late ones put the case in "needs attention", and a late
attestation still completes it."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Stack, start_stack
from sqlmodel import Session, select
from support import csrf_of, decide, link_in, prefect, run_of, send_leaver, text_of, wait_for_state

from offboarding.domain.audit import events_for_case
from offboarding.domain.models import Attestation, Case, CaseStatus
from offboarding.workinstruction.document import fingerprint

pytestmark = pytest.mark.e2e

ATTEST_LINK = re.compile(r"https?://[^\s\"'<>]+/attest/[A-Za-z0-9._\-]+")
STEPS = [
    {
        "id": "laptop",
        "text": "Collect the laptop",
        "text_nl": "Laptop innemen",
        "assignee": "E1016",  # Milan Dijkstra, reads Dutch
    },
    {
        "id": "badge",
        "text": "Collect the door badge",
        "text_nl": "Toegangspas innemen",
        "assignee": "E1003",  # Emma Visser, reads English
        "effect": "sign_in",
    },
]


@pytest.fixture(scope="module")
def manual_stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from start_stack(
        tmp_path_factory.mktemp("manual"),
        None,
        smtp_server,
        # a deadline that passes while the test watches: the case must go to needs attention
        policy={"manual_steps": STEPS, "attest_within_hours": 0.002},
        dispatch_interval_seconds=1,
    )


def case_of(stack: Stack, case_id: str) -> Case:
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        return case


def wait_for_status(stack: Stack, case_id: str, status: CaseStatus, timeout: float = 180) -> Case:
    deadline = time.monotonic() + timeout
    case = case_of(stack, case_id)
    while time.monotonic() < deadline:
        case = case_of(stack, case_id)
        if case.status == status:
            return case
        time.sleep(0.2)
    raise AssertionError(f"case stayed {case.status}, wanted {status}")


def attestations(stack: Stack, case_id: str) -> list[Attestation]:
    with Session(stack.engine) as session:
        return list(session.exec(select(Attestation).where(Attestation.case_id == case_id)))


def attest(link: str, remark: str, barrier: threading.Barrier | None = None) -> httpx.Response:
    with httpx.Client(timeout=60) as browser:
        page = browser.get(link)
        assert page.status_code == 200, page.text
        if barrier is not None:
            barrier.wait(timeout=60)
        return browser.post(link, data={"remark": remark, "csrf_token": csrf_of(page.text)})


def test_manual_steps_are_planned_attested_once_and_complete_the_case(manual_stack) -> None:  # type: ignore[no-untyped-def]
    stack = manual_stack
    response = send_leaver(stack, "E1019", "svandermeer", "Sophie van der Meer")
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)

    approval = stack.mailbox.wait_for(  # type: ignore[attr-defined]
        lambda m: case_id in text_of(m) and "/approvals/" in text_of(m)
    )[0]
    assert "Laptop innemen" in text_of(approval) or "Collect the laptop" in text_of(approval)
    assert attestations(stack, case_id) == [], "nothing is asked of anyone before approval"
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    assert decide(link_in(approval), "approve").status_code == 200

    # the systems are revoked; the case waits for the people, then misses its deadline
    def attestation_mail(message: Any) -> bool:
        return "/attest/" in text_of(message) and case_id in text_of(message)

    stack.mailbox.wait_for(lambda m: attestation_mail(m) and "mdijkstra" in str(m["To"]))  # type: ignore[attr-defined]
    mails = stack.mailbox.wait_for(  # type: ignore[attr-defined]
        lambda m: attestation_mail(m) and "evisser" in str(m["To"])
    )
    mails = [m for m in stack.mailbox.messages if attestation_mail(m)]  # type: ignore[attr-defined]
    by_person = {str(m["To"]): m for m in mails}
    assert set(by_person) == {"mdijkstra@example.test", "evisser@example.test"}, by_person
    assert "Laptop innemen" in text_of(by_person["mdijkstra@example.test"])  # in Dutch
    assert "Collect the door badge" in text_of(by_person["evisser@example.test"])
    asleep = wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    late = wait_for_status(stack, case_id, CaseStatus.NEEDS_ATTENTION)
    assert "not attested by their deadline" in late.status_detail
    assert "E1016" in late.status_detail and "E1003" in late.status_detail

    # a forged wake-up through Prefect's API: the run reads the attestations and waits again
    forged = prefect(
        "POST",
        f"{stack.running.api_url}/flow_runs/{flow_run_id}/resume",
        json={"run_input": {"case_id": case_id}},
    )
    assert forged.status_code in (200, 201) and forged.json()["status"] == "ACCEPT", forged.text
    again = wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    first_key = asleep["state"]["state_details"]["pause_key"]
    assert first_key.startswith("attest-")
    assert again["state"]["state_details"]["pause_key"] not in (None, first_key)
    assert case_of(stack, case_id).status != CaseStatus.COMPLETED

    # a mail scanner fetches both links: nothing is attested
    laptop_link = ATTEST_LINK.findall(text_of(by_person["mdijkstra@example.test"]))[0]
    badge_link = ATTEST_LINK.findall(text_of(by_person["evisser@example.test"]))[0]
    for link in (laptop_link, badge_link):
        assert httpx.get(link, timeout=60).status_code == 200
    assert all(a.attested_at is None for a in attestations(stack, case_id))

    # Milan attests twice at the same moment (two tabs): once is recorded
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []
    tabs = [
        threading.Thread(
            target=lambda: answers.append(attest(laptop_link, "serial 5CG-42", barrier))
        )
        for _ in range(2)
    ]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join(timeout=120)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text[:200] for a in answers]
    assert case_of(stack, case_id).status != CaseStatus.COMPLETED, "one step is still open"

    # the last step, late: the case completes
    assert attest(badge_link, "").status_code == 200
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    assert case_of(stack, case_id).status == CaseStatus.COMPLETED

    rows = {a.assignee_id: a for a in attestations(stack, case_id)}
    assert rows["E1016"].attested_by == "E1016" and rows["E1016"].remark == "serial 5CG-42"
    assert rows["E1003"].attested_at is not None
    events = events_for_case(stack.engine, case_id)
    attested = [e for e in events if e.action == "manual_step.attested"]
    assert len(attested) == 2
    assert {e.actor for e in attested} == {"employee:E1016", "employee:E1003"}
    assert "case.needs_attention" in [e.action for e in events]
    assert [e.action for e in events][-1] in ("case.completed", "email.case_completed")

    evidence = evidence_of(stack, flow_run_id)
    english, dutch = evidence.split("\n---\n")
    assert "| Collect the laptop \\(by E1016\\) | E1016 |" in english
    assert "| Laptop innemen \\(door E1016\\) | E1016 |" in dutch
    assert "serial 5CG\\-42" in english and "serial 5CG\\-42" in dutch  # Markdown-escaped
    assert "not attested yet" not in evidence


def test_the_case_gets_its_evidence_pack_with_the_instruction_version(manual_stack) -> None:  # type: ignore[no-untyped-def]
    """The finished case of the test above: its run carries the full evidence pack, which
    names the work instruction version its plan followed."""
    stack = manual_stack
    with Session(stack.engine) as session:
        done = session.exec(select(Case).where(Case.status == CaseStatus.COMPLETED)).first()
    assert done is not None and done.flow_run_id
    artifacts: list[dict[str, Any]] = prefect(
        "POST",
        f"{stack.running.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [done.flow_run_id]}}},
    ).json()
    packs = [a for a in artifacts if a["key"].startswith("evidence-pack-")]
    assert packs, [a["key"] for a in artifacts]
    version = fingerprint(stack.settings)[:12]
    assert version in str(packs[0]["data"])
    assert done.id in str(packs[0]["data"])


def evidence_of(stack: Stack, flow_run_id: str) -> str:
    artifacts: list[dict[str, Any]] = prefect(
        "POST",
        f"{stack.running.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"},
    ).json()
    found = [a for a in artifacts if a["key"].startswith("evidence-")]
    assert found, [a["key"] for a in artifacts]
    return str(found[0]["data"])
