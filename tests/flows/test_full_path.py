"""One leaver, end to end, against real peers: signed webhook → email → GET → POST approve
→ run completes → slapd shows the leaver locked, sign-in refused, in no group → audit verifies."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from support import (
    can_bind,
    decide,
    groups_with,
    is_locked,
    link_in,
    text_of,
    wait_for_state,
    waiting_case,
)

from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.models import Case, CaseStatus

pytestmark = pytest.mark.e2e

# (employee id, uid, name) of demo employees who are in groups and are not managers
LEAVER = ("E1006", "bmulder", "Bram Mulder")


def offboard_and_approve(stack, leaver: tuple[str, str, str]) -> str:  # type: ignore[no-untyped-def]
    employee_id, uid, name = leaver
    dn = f"uid={uid},{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    groups_before = groups_with(admin, stack.directory.groups_base, dn, uid)
    assert groups_before, "the leaver should start in some groups"
    assert can_bind(stack.directory.url, dn, stack.password)

    case_id, flow_run_id, requests = waiting_case(stack, employee_id, uid, name)
    recipients = {str(m["To"]) for m in requests}
    assert "hbakker@example.test" not in recipients  # the requester never gets a link
    assert f"{uid}@example.test" not in recipients
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == groups_before  # nothing yet

    link = link_in(requests[0])
    with httpx.Client() as browser:
        page = browser.get(link)
        assert page.status_code == 200
        assert name in page.text and "Hanna Bakker" in page.text
        for group in groups_before:
            assert group.split(",")[0] in page.text
    result = decide(link, "approve")
    assert result.status_code == 200, result.text

    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["name"] == f"offboard-{employee_id}-{uid}"
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert is_locked(admin, dn)
    assert not can_bind(stack.directory.url, dn, stack.password)
    admin.unbind()
    return case_id


def test_full_path_on_postgresql(stack) -> None:  # type: ignore[no-untyped-def]
    case_id = offboard_and_approve(stack, LEAVER)
    with Session(stack.engine) as session:
        case = session.get(Case, case_id)
        assert case is not None and case.status == CaseStatus.COMPLETED
    actions = [e.action for e in events_for_case(stack.engine, case_id)]
    for expected in (
        "case.opened",
        "plan.created",
        "email.approval_request",
        "approval.viewed",
        "decision.recorded",
        "revocation.step",
        "verification",
        "case.completed",
    ):
        assert expected in actions, expected
    assert verify_chain(stack.engine).ok

    def told(message: Any) -> bool:
        return case_id in text_of(message) and "approvals/" not in text_of(message)

    def decided_elsewhere(message: Any) -> bool:
        return any(s in str(message["Subject"]) for s in ("Already decided", "Al beslist"))

    done = [m for m in stack.mailbox.wait_for(told) if not decided_elsewhere(m)]
    assert {"hbakker@example.test"} <= {str(m["To"]) for m in done}
    assert len({str(m["To"]) for m in done}) == 2  # requester and approver
    # the other two managers asked hear that it was decided, once each
    others = stack.mailbox.wait_for(lambda m: told(m) and decided_elsewhere(m))
    assert len([str(m["To"]) for m in others]) == 2
    assert not {str(m["To"]) for m in others} & {str(m["To"]) for m in done}


def test_run_shows_plan_evidence_and_logs_in_prefect(stack) -> None:  # type: ignore[no-untyped-def]
    case_id = offboard_and_approve(stack, ("E1014", "fbrouwer", "Finn Brouwer"))
    with Session(stack.engine) as session:
        case = session.exec(select(Case).where(Case.id == case_id)).one()
    api = stack.running.api_url
    artifacts = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [case.flow_run_id]}}},
        timeout=10,
    ).json()
    keys = {a["key"]: a for a in artifacts}
    kinds = {"plan": keys[f"plan-{case_id[:12]}"], "evidence": keys[f"evidence-{case_id[:12]}"]}
    assert kinds["plan"]["type"] == "table"
    assert kinds["evidence"]["type"] == "markdown"
    pack = keys[f"evidence-pack-{case_id[:12]}"]  # the full pack, both languages
    assert case_id in pack["data"] and "Bewijs" in pack["data"], pack["data"][:300]
    assert "All access revoked and verified" in kinds["evidence"]["data"]
    assert "Alle toegang ingetrokken" in kinds["evidence"]["data"]
    messages = ""
    deadline = time.monotonic() + 20  # the run's log handler ships lines in batches
    while "action=case.completed" not in messages and time.monotonic() < deadline:
        time.sleep(0.5)
        logs = [  # the first and the last lines of the run (a page holds 200 at most)
            entry
            for sort in ("TIMESTAMP_ASC", "TIMESTAMP_DESC")
            for entry in httpx.post(
                f"{api}/logs/filter",
                json={
                    "logs": {"flow_run_id": {"any_": [case.flow_run_id]}},
                    "limit": 200,
                    "sort": sort,
                },
                timeout=10,
            ).json()
        ]
        messages = " | ".join(entry["message"] for entry in logs)
    assert "inventory" in messages and "connector=directory" in messages, messages
    assert "audit action=case.completed" in messages, messages  # structlog lines reach run logs
    assert f"case_id={case_id}" in messages
    assert "/approvals/" not in messages  # approval links are credentials: never in run logs


def test_full_path_on_sqlite_defaults(sqlite_stack) -> None:  # type: ignore[no-untyped-def]
    case_id = offboard_and_approve(sqlite_stack, LEAVER)
    assert verify_chain(sqlite_stack.engine).ok
    assert str(sqlite_stack.settings.resolved_database_url).startswith("sqlite:///")
    with Session(sqlite_stack.engine) as session:
        assert session.get(Case, case_id).status == CaseStatus.COMPLETED  # type: ignore[union-attr]


def test_no_secret_reaches_logs_artifacts_or_emails(stack) -> None:  # type: ignore[no-untyped-def]
    offboard_and_approve(stack, ("E1001", "sjansen", "Sanne Jansen"))
    api = stack.running.api_url
    time.sleep(2)  # let the run's log handler flush
    shipped: list[str] = []
    offset = 0
    while True:
        page = httpx.post(f"{api}/logs/filter", json={"limit": 200, "offset": offset}).json()
        shipped += [entry["message"] for entry in page]
        if len(page) < 200:
            break
        offset += 200
    shipped += [str(a.get("data")) for a in httpx.post(f"{api}/artifacts/filter", json={}).json()]
    shipped += [m.as_string() for m in stack.mailbox.messages]
    shipped += [p.read_text(errors="replace") for p in (stack.settings.home / "logs").glob("*.log")]
    everything = "\n".join(shipped)
    assert "offboard-E1001-sjansen" in everything  # the sources are really there
    secrets = {
        "HRIS secret": stack.settings.hris_secret.get_secret_value(),
        "signing key": stack.settings.signing_key.get_secret_value(),
        "directory admin password": stack.directory.admin_password,
        "employees' password": stack.password,
    }
    leaked = [name for name, value in secrets.items() if value in everything]
    assert leaked == []
