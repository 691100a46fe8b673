"""Asking for approval: who gets a link, and what happens when nobody may approve."""

from __future__ import annotations

import email
import email.policy
import secrets
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from approvals.requests import NoEligibleApprover, request_approvals
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.cases import leaver_of
from offboarding.domain.models import Case
from offboarding.domain.revocation import inventory_all, store_plan
from offboarding.wiring.services import build_services
from offboarding.wiring.settings import Settings


def services_for(tmp_path: Path, directory: LocalDirectory, **connector: object):  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path / "home",
        connectors=[directory.connector_config(**connector)],
    )
    return build_services(settings)


def open_case(services, employee_id: str, email_address: str) -> tuple[Case, object]:  # type: ignore[no-untyped-def]
    case = Case(
        event_id=f"evt-{secrets.token_hex(4)}",
        employee_id=employee_id,
        employee_email=email_address,
        display_name="Jan de Vries",
        requested_by="E0007",
        last_working_day=date.today(),
        occurred_at=datetime.now(UTC),
    )
    from sqlmodel import Session

    with Session(services.engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    record = store_plan(services, case, leaver_of(case), inventory_all(services, leaver_of(case)))
    return case, record


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
