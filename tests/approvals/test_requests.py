"""Asking for approval: who gets a link, and what happens when nobody may approve."""

from __future__ import annotations

import email
import email.policy
import secrets
from pathlib import Path

import pytest
from approvals_support import open_case, services_for

from approvals.requests import NoEligibleApprover, request_approvals
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org


@pytest.fixture
def directory(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def test_each_eligible_manager_gets_one_personal_link_once(tmp_path, directory) -> None:  # type: ignore[no-untyped-def]
    services = services_for(tmp_path, directory, managers_group=directory.org.managers_group_dn)
    case, record = open_case(services, "E1042", "jdevries@example.test")
    issued = request_approvals(services, case, record)
    assert sorted(link.approver.employee_id for link in issued) == ["E1004", "E1007", "E1011"]
    assert len({link.url for link in issued}) == 3
    assert request_approvals(services, case, record) == []  # a re-run sends nothing twice
    mails = sorted((services.settings.outbox_dir).glob("*.eml"))
    assert len(mails) == 3
    recipients = {
        str(email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["To"])
        for p in mails
    }
    assert recipients == {"lsmit@example.test", "ndegroot@example.test", "ihendriks@example.test"}


def test_when_only_the_requester_is_a_manager_nobody_can_approve(tmp_path, directory) -> None:  # type: ignore[no-untyped-def]
    services = services_for(tmp_path, directory, managers=["E0007"])
    case, record = open_case(services, "E1042", "jdevries@example.test")
    with pytest.raises(NoEligibleApprover, match="no eligible second manager"):
        request_approvals(services, case, record)
    assert not list(services.settings.outbox_dir.glob("*.eml"))
