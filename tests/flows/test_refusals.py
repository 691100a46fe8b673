"""Everything that must NOT lead to revocation, each checked at the real directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from unittest import mock

import httpx
import pytest
from itsdangerous.timed import TimestampSigner
from sqlmodel import Session, select
from support import (
    can_bind,
    csrf_of,
    decide,
    flow_run,
    groups_with,
    is_locked,
    link_in,
    prefect,
    run_of,
    send_leaver,
    text_of,
    wait_for_state,
)

from approvals.tokens import LinkClaims, LinkSigner, SignedDecision
from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.cases import latest_plan
from offboarding.domain.models import ApprovalDecision, ApprovalRequest, Case, CaseStatus, utcnow

pytestmark = pytest.mark.e2e


@dataclass
class OpenCase:
    case_id: str
    flow_run_id: str
    dn: str
    uid: str
    groups: list[str]
    links: dict[str, str]  # approver email -> link from the received email


def open_case(stack, employee_id: str, uid: str, name: str) -> OpenCase:  # type: ignore[no-untyped-def]
    dn = f"uid={uid},{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    groups = groups_with(admin, stack.directory.groups_base, dn, uid)
    admin.unbind()
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")  # all emails are out by then
    emails = stack.mailbox.wait_for(lambda m: case_id in text_of(m) and "/approvals/" in text_of(m))
    return OpenCase(
        case_id, flow_run_id, dn, uid, groups, {str(m["To"]): link_in(m) for m in emails}
    )


def assert_nothing_revoked(stack, case: OpenCase) -> None:  # type: ignore[no-untyped-def]
    admin = stack.directory.admin_connection()
    try:
        assert groups_with(admin, stack.directory.groups_base, case.dn, case.uid) == case.groups
        assert not is_locked(admin, case.dn)
    finally:
        admin.unbind()
    assert can_bind(stack.directory.url, case.dn, stack.password)
    with Session(stack.engine) as session:
        stored = session.get(Case, case.case_id)
        assert stored is not None and stored.status == CaseStatus.AWAITING_APPROVAL
    actions = [e.action for e in events_for_case(stack.engine, case.case_id)]
    assert "revocation.step" not in actions


def mint_link(stack, case: OpenCase, approver_id: str, *, signer: LinkSigner | None = None) -> str:  # type: ignore[no-untyped-def]
    """A genuine, service-signed link for someone who should never have received one."""
    plan = latest_plan(stack.engine, case.case_id)
    assert plan is not None
    with Session(stack.engine, expire_on_commit=False) as session:
        request = session.exec(
            select(ApprovalRequest).where(
                ApprovalRequest.plan_id == plan.id, ApprovalRequest.approver_id == approver_id
            )
        ).first() or ApprovalRequest(
            case_id=case.case_id,
            plan_id=plan.id,
            plan_hash=plan.plan_hash,
            approver_id=approver_id,
            approver_email=f"{approver_id}@example.test",
            expires_at=utcnow() + timedelta(hours=72),
        )
        session.add(request)
        session.commit()
    token = (signer or stack.services.links).issue(
        LinkClaims(request.id, case.case_id, approver_id, plan.plan_hash)
    )
    return f"{stack.running.web_url}/approvals/{token}"


def refused_events(stack, case: OpenCase) -> list:  # type: ignore[no-untyped-def]
    return [
        e for e in events_for_case(stack.engine, case.case_id) if e.action == "decision.refused"
    ]


@pytest.mark.parametrize(
    ("leaver", "approver", "why"),
    [
        (("E1002", "ddeboer", "Daan de Boer"), "E0007", "requested this offboarding"),
        (("E1011", "ihendriks", "Iris Hendriks"), "E1011", "person leaving"),
        (("E1003", "evisser", "Emma Visser"), "E1001", "not a manager"),
    ],
    ids=["requester", "leaver", "non-manager"],
)
def test_approval_by_someone_not_allowed_is_refused(stack, leaver, approver, why) -> None:  # type: ignore[no-untyped-def]
    case = open_case(stack, *leaver)
    response = decide(mint_link(stack, case, approver), "approve")
    assert response.status_code == 403
    assert why in response.text
    assert refused_events(stack, case)
    assert flow_state(stack, case) == "PAUSED"
    assert_nothing_revoked(stack, case)


def flow_state(stack, case: OpenCase) -> str:  # type: ignore[no-untyped-def]
    return flow_run(stack.running.api_url, case.flow_run_id)["state"]["type"]


def test_expired_tampered_and_reused_links(stack) -> None:  # type: ignore[no-untyped-def]
    case = open_case(stack, "E1005", "fmeijer", "Fleur Meijer")
    (_, first), (second_to, second), *_ = sorted(case.links.items())

    # tampered: one character of the signed token changed
    tampered = first[:-3] + ("x" if first[-3] != "x" else "y") + first[-2:]
    assert httpx.get(tampered).status_code == 400
    assert httpx.post(tampered, data={"decision": "approve"}).status_code == 400

    # expired by the signature's own timestamp (issued 73 hours ago)
    with mock.patch.object(
        TimestampSigner, "get_timestamp", return_value=int(time.time()) - 73 * 3600
    ):
        old = mint_link(stack, case, "E1004")
    assert httpx.get(old).status_code == 410

    # expired by the stored request (the link itself is freshly signed)
    with httpx.Client() as browser:
        page = browser.get(second)
        assert page.status_code == 200
        with Session(stack.engine) as session:
            for request in session.exec(
                select(ApprovalRequest).where(ApprovalRequest.approver_email == second_to)
            ):
                request.expires_at = utcnow() - timedelta(minutes=1)
                session.add(request)
            session.commit()
        late = browser.post(second, data={"decision": "approve", "csrf_token": csrf_of(page.text)})
        assert late.status_code == 410
    assert_nothing_revoked(stack, case)

    # a GET never decides (link scanners): many GETs, still nothing decided
    for _ in range(3):
        shown = httpx.get(first)
        assert shown.status_code == 200
    # the page cannot be framed (clickjacking) and never passes its URL on as a Referer
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
    assert shown.headers["x-frame-options"] == "DENY"
    assert shown.headers["cache-control"] == "no-store"
    assert_nothing_revoked(stack, case)

    # a POST without the CSRF token/cookie from the page decides nothing
    assert httpx.post(first, data={"decision": "approve"}).status_code == 400
    assert_nothing_revoked(stack, case)

    # the genuine link works once; a second use says so
    assert decide(first, "approve").status_code == 200
    wait_for_state(stack.running.api_url, case.flow_run_id, "COMPLETED")
    again = httpx.get(first)
    assert again.status_code == 409
    assert httpx.post(first, data={"decision": "reject", "reason": "x"}).status_code == 409
    assert verify_chain(stack.engine).ok


def test_forged_resume_through_prefect_is_refused_and_the_run_waits_again(stack) -> None:  # type: ignore[no-untyped-def]
    case = open_case(stack, "E1009", "lvos", "Lotte Vos")
    plan = latest_plan(stack.engine, case.case_id)
    assert plan is not None
    forged = {
        "decision_id": "made-up",
        "case_id": case.case_id,
        "plan_hash": plan.plan_hash,
        "approver_id": "E1004",
        "decision": "approve",
        "signature": "not-a-signature",
    }
    result = prefect(
        "POST",
        f"{stack.running.api_url}/flow_runs/{case.flow_run_id}/resume",
        json={"run_input": forged},
    ).json()
    assert result["status"] == "ACCEPT"  # Prefect itself lets anyone resume
    wait_until(lambda: refused_events(stack, case), "the flow to refuse the forged input")
    wait_for_state(stack.running.api_url, case.flow_run_id, "PAUSED")
    refusal = refused_events(stack, case)[0]
    assert refusal.actor == "prefect:resume" and "signature" in refusal.details
    assert_nothing_revoked(stack, case)

    # a correctly signed decision that was never recorded is refused too
    unrecorded = stack.services.decisions.sign(SignedDecision(**{**forged, "signature": ""}))
    prefect(
        "POST",
        f"{stack.running.api_url}/flow_runs/{case.flow_run_id}/resume",
        json={"run_input": unrecorded.model_dump()},
    )
    wait_until(lambda: len(refused_events(stack, case)) >= 2, "the second refusal")
    wait_for_state(stack.running.api_url, case.flow_run_id, "PAUSED")
    assert_nothing_revoked(stack, case)

    # the real second manager still can approve afterwards
    assert decide(next(iter(case.links.values())), "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, case.flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"


def test_a_grant_that_appears_after_approval_needs_a_new_approval(stack) -> None:  # type: ignore[no-untyped-def]
    case = open_case(stack, "E1010", "rpeters", "Ruben Peters")
    (_, first), (_, second), *_ = sorted(case.links.items())
    old_plan = latest_plan(stack.engine, case.case_id)
    assert old_plan is not None
    new_group = f"cn=finance,{stack.directory.groups_base}"
    admin = stack.directory.admin_connection()
    admin.modify(new_group, {"member": [("MODIFY_ADD", [case.dn])]})
    admin.unbind()
    case.groups = sorted([*case.groups, new_group])

    assert decide(first, "approve").status_code == 200  # approves plan v1 (without finance)
    wait_until(
        lambda: latest_plan(stack.engine, case.case_id).version == 2,  # type: ignore[union-attr]
        "a second plan",
    )
    wait_for_state(stack.running.api_url, case.flow_run_id, "PAUSED")
    assert_nothing_revoked(stack, case)

    # the other manager's link is for the older plan hash
    stale = httpx.get(second)
    assert stale.status_code == 409
    # replaying the genuine v1 decision into the run is refused: wrong plan
    with Session(stack.engine) as session:
        v1 = session.exec(
            select(ApprovalDecision).where(ApprovalDecision.case_id == case.case_id)
        ).one()
    replay = stack.services.decisions.sign(
        SignedDecision(
            decision_id=v1.id,
            case_id=case.case_id,
            plan_hash=old_plan.plan_hash,
            approver_id=v1.approver_id,
            decision="approve",
        )
    )
    prefect(
        "POST",
        f"{stack.running.api_url}/flow_runs/{case.flow_run_id}/resume",
        json={"run_input": replay.model_dump()},
    )
    wait_until(lambda: refused_events(stack, case), "the replayed decision to be refused")
    wait_for_state(stack.running.api_url, case.flow_run_id, "PAUSED")
    assert_nothing_revoked(stack, case)

    # approving the new plan revokes everything, the new group included
    new_plan = latest_plan(stack.engine, case.case_id)
    assert new_plan is not None
    emails = stack.mailbox.wait_for(lambda m: new_plan.plan_hash[:12] in text_of(m))
    assert decide(link_in(emails[0]), "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, case.flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    admin = stack.directory.admin_connection()
    assert groups_with(admin, stack.directory.groups_base, case.dn, case.uid) == []
    admin.unbind()


def wait_until(predicate, what: str, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_expired_links_can_be_renewed_by_an_operator(stack, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from offboarding.cli import app
    from offboarding.wiring.service import settings_as_env

    case = open_case(stack, "E1013", "jdekker", "Julia Dekker")
    with Session(stack.engine) as session:
        for request in session.exec(
            select(ApprovalRequest).where(ApprovalRequest.case_id == case.case_id)
        ):
            request.expires_at = utcnow() - timedelta(minutes=1)
            session.add(request)
        session.commit()
    old = next(iter(case.links.values()))
    assert httpx.get(old).status_code == 410
    before = len(stack.mailbox.messages)

    for key, value in settings_as_env(stack.settings).items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["approvals", "resend", case.case_id])
    assert result.exit_code == 0, result.output
    assert result.output.count("new link sent to") == 3
    assert stack.settings.signing_key.get_secret_value() not in result.output

    fresh = [m for m in stack.mailbox.messages[before:] if case.case_id in text_of(m)]
    assert len(fresh) == 3
    assert decide(link_in(fresh[0]), "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, case.flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    assert "approval.renewed" in [e.action for e in events_for_case(stack.engine, case.case_id)]

    again = CliRunner().invoke(app, ["approvals", "resend", case.case_id])
    assert again.exit_code == 1 and "not awaiting approval" in again.output
