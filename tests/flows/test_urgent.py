"""Instant dismissal ("ontslag op staande voet") with a containment policy: sign-in goes at
once, the rest waits for the second manager."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Stack, start_stack
from support import (
    can_bind,
    decide,
    groups_with,
    is_locked,
    link_in,
    run_of,
    text_of,
    wait_for_state,
)

from offboarding.domain.audit import events_for_case
from offboarding.intake.client import send_event, termination_event

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def containing_stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from start_stack(
        tmp_path_factory.mktemp("urgent"), None, smtp_server, urgent_containment=["account"]
    )


def test_urgent_case_locks_at_once_and_revokes_the_rest_after_approval(containing_stack) -> None:  # type: ignore[no-untyped-def]
    stack = containing_stack
    dn = f"uid=jdegraaf,{stack.directory.users_base}"
    admin = stack.directory.admin_connection()
    groups = groups_with(admin, stack.directory.groups_base, dn, "jdegraaf")
    assert groups
    event = termination_event(
        employee_id="E1018",
        email="jdegraaf@example.test",
        display_name="Jesse de Graaf",
        requested_by=stack.org.requester_id,
        urgent=True,
    )
    response = send_event(
        base_url=stack.running.web_url,
        secret=stack.settings.hris_secret.get_secret_value(),
        event=event,
    )
    assert response.status_code == 202
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")

    # before any decision: sign-in is gone, group access waits for the second manager
    assert is_locked(admin, dn)
    assert not can_bind(stack.directory.url, dn, stack.password)
    assert groups_with(admin, stack.directory.groups_base, dn, "jdegraaf") == groups
    email = stack.mailbox.wait_for(lambda m: case_id in text_of(m) and "/approvals/" in text_of(m))
    assert "ontslag op staande voet" in text_of(email[0]).lower()  # Lars Smit reads Dutch

    assert decide(link_in(email[0]), "approve").status_code == 200
    run = wait_for_state(stack.running.api_url, flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    assert groups_with(admin, stack.directory.groups_base, dn, "jdegraaf") == []
    admin.unbind()
    actions = [e.action for e in events_for_case(stack.engine, case_id)]
    assert actions.index("containment.started") < actions.index("decision.recorded")
    tags = run["tags"]
    assert "urgent" in tags and "offboarding" in tags
