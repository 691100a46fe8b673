"""The watch after a case, through the whole service: a completed leaver gets a group back
in slapd; the served `oversight` deployment's next run finds it, records it, mails the
managers who answered for the case, and opens one follow-up case that waits for a second
manager's approval; approved, it takes the group away again, and the last recheck is clean."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import ldap3
import pytest
from sqlmodel import Session, select
from support import decide, groups_with, link_in, prefect, run_of, send_leaver, text_of
from support import wait_for_state as run_state

from offboarding.domain import watch
from offboarding.domain.audit import events_for_case, verify_chain
from offboarding.domain.models import (
    Case,
    CaseStatus,
    Recheck,
    RecheckStatus,
    RevocationPlanRecord,
)
from offboarding.domain.plan import RevocationPlan

pytestmark = pytest.mark.e2e
LEAVER = ("E1006", "bmulder", "Bram Mulder")  # in groups, not a manager


def wait_until(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def run_oversight(stack: Any) -> str:
    """Start one run of the served oversight deployment and wait until it completed."""
    api = stack.running.api_url
    name = f"oversight/oversight-{stack.settings.instance}"
    found = wait_until(
        f"the runner serves {name}",
        lambda: (r := prefect("GET", f"{api}/deployments/name/{name}")).status_code == 200 and r,
    )
    created = prefect("POST", f"{api}/deployments/{found.json()['id']}/create_flow_run", json={})
    assert created.status_code == 201, created.text
    run = run_state(api, created.json()["id"], "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return str(run["id"])


def offboard(stack: Any) -> str:
    """A leaver offboarded the normal way: HR event, emailed link, approval, completion."""
    employee_id, uid, name = LEAVER
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = str(response.json()["case_id"])
    flow_run_id = run_of(stack, case_id)
    (request, *_) = stack.mailbox.wait_for(
        lambda m: case_id in text_of(m) and "approvals/" in text_of(m)
    )
    run_state(stack.running.api_url, flow_run_id, "PAUSED")  # waits for the decision
    assert decide(link_in(request), "approve").status_code == 200
    run = run_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    return case_id


def make_due(stack: Any, case_id: str, day: float) -> Recheck:
    """Time passing: the recheck's moment moves into the past (nothing else changes)."""
    with Session(stack.engine, expire_on_commit=False) as session:
        recheck = session.exec(
            select(Recheck).where(Recheck.case_id == case_id, Recheck.day == day)
        ).one()
        recheck.due_at = datetime.now(UTC) - timedelta(minutes=1)
        session.add(recheck)
        session.commit()
    return recheck


def recheck_of(stack: Any, recheck_id: str) -> Recheck:
    with Session(stack.engine, expire_on_commit=False) as session:
        found = session.get(Recheck, recheck_id)
    assert found is not None
    return found


def follow_ups(stack: Any, employee_id: str) -> list[Case]:
    with Session(stack.engine, expire_on_commit=False) as session:
        return list(
            session.exec(
                select(Case).where(
                    Case.employee_id == employee_id,
                    Case.event_id.startswith(watch.FOLLOW_UP_PREFIX),  # type: ignore[attr-defined]
                )
            )
        )


def events(stack: Any, case_id: str, action: str) -> list[dict[str, Any]]:
    return [
        json.loads(e.details) for e in events_for_case(stack.engine, case_id) if e.action == action
    ]


def a_group_of_names(conn: ldap3.Connection, base: str) -> str:
    """A group that lists members by DN, the leaver is not in and no manager rights come with."""
    conn.search(base, "(objectClass=groupOfNames)", attributes=["cn"])
    names = sorted(e.entry_dn for e in conn.entries if "manager" not in e.entry_dn.lower())
    assert names
    return names[0]


def test_access_found_again_is_reported_and_taken_away_after_approval(stack) -> None:  # type: ignore[no-untyped-def]
    employee_id, uid, _ = LEAVER
    dn = f"uid={uid},{stack.directory.users_base}"
    case_id = offboard(stack)
    assert [(r.day, r.status) for r in watch.rechecks_of(stack.engine, case_id)] == [
        (1, RecheckStatus.DUE),
        (7, RecheckStatus.DUE),
        (30, RecheckStatus.DUE),
    ]

    # a colleague puts the leaver back in a group
    admin = stack.directory.admin_connection()
    group = a_group_of_names(admin, stack.directory.groups_base)
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    assert admin.modify(group, {"member": [(ldap3.MODIFY_ADD, [dn])]}), admin.result

    first = make_due(stack, case_id, 1)
    run_oversight(stack)

    # recorded, with the system, the grant and the group, and no secret
    (found,) = events(stack, case_id, "watch.found_again")
    assert found["systems"] == ["directory"]
    assert found["targets"] == [group]
    assert len(found["grants"]) == 1 and found["grants"][0].startswith("directory|group|")
    assert stack.settings.hris_secret.get_secret_value() not in json.dumps(found)
    done = recheck_of(stack, first.id)
    assert done.status == RecheckStatus.FOUND_AGAIN and done.attempts == 1

    # one follow-up case, opened the way the intake opens one
    (follow_up,) = follow_ups(stack, employee_id)
    assert follow_up.event_id == watch.follow_up_event_id(case_id, 1)
    assert found["follow_up_case_id"] == follow_up.id == done.follow_up_case_id
    assert next(e.action for e in events_for_case(stack.engine, follow_up.id)) == "case.opened"

    # management is told: the requester and the manager who approved the case
    told = stack.mailbox.wait_for(
        lambda m: (
            "Access found again" in str(m["Subject"])
            or "Opnieuw toegang gevonden" in str(m["Subject"])
        )
    )
    recipients = {str(m["To"]) for m in told}
    assert "hbakker@example.test" in recipients and len(recipients) == 2
    assert all(follow_up.id in text_of(m) and group.split(",")[0] in text_of(m) for m in told)

    # the follow-up goes through the normal flow: a plan with the group, waiting for approval
    run_id = run_of(stack, follow_up.id)
    run_state(stack.running.api_url, run_id, "PAUSED")
    with Session(stack.engine) as session:
        plan = session.exec(
            select(RevocationPlanRecord).where(RevocationPlanRecord.case_id == follow_up.id)
        ).one()
        assert session.get(Case, follow_up.id).status == CaseStatus.AWAITING_APPROVAL  # type: ignore[union-attr]
    targets = [step.grant.target for step in RevocationPlan.from_canonical(plan.canonical).steps]
    assert targets == [group]

    # the day-7 recheck finds the same access while the follow-up still waits: it points
    # at that follow-up and opens no second one
    seventh = make_due(stack, case_id, 7)
    run_oversight(stack)
    assert recheck_of(stack, seventh.id).follow_up_case_id == follow_up.id
    assert [c.id for c in follow_ups(stack, employee_id)] == [follow_up.id]
    assert len(events(stack, case_id, "watch.found_again")) == 2
    assert recheck_of(stack, first.id).attempts == 1  # done rechecks are never run again

    # a second manager approves the follow-up: the group goes again
    (request, *_) = stack.mailbox.wait_for(
        lambda m: follow_up.id in text_of(m) and "approvals/" in text_of(m)
    )
    assert decide(link_in(request), "approve").status_code == 200
    run = run_state(stack.running.api_url, run_id, "COMPLETED", "FAILED", "CRASHED")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert groups_with(admin, stack.directory.groups_base, dn, uid) == []
    admin.unbind()

    # the original case's last recheck now finds nothing
    last = make_due(stack, case_id, 30)
    run_oversight(stack)
    assert recheck_of(stack, last.id).status == RecheckStatus.CLEAN
    assert len(events(stack, case_id, "watch.clean")) == 1
    assert verify_chain(stack.engine).ok
