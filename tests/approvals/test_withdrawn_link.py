"""An approval link of a case HR withdrew says so, in the reader's language, and decides nothing."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from approvals_support import open_case, services_for
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from approvals.requests import request_approvals
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.domain.audit import events_for_case
from offboarding.domain.cases import set_status
from offboarding.domain.models import ApprovalDecision, CaseStatus
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.web import create_app


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def test_a_link_of_a_withdrawn_case_says_hr_withdrew_it(
    tmp_path: Path, directory: LocalDirectory
) -> None:
    services = services_for(
        tmp_path,
        directory,
        managers_group=directory.org.managers_group_dn,  # type: ignore[attr-defined]
    )
    case, record = open_case(services, "E1042", "jdevries@example.test")
    set_status(services.engine, case.id, CaseStatus.AWAITING_APPROVAL)
    issued = request_approvals(services, case, record)  # type: ignore[arg-type]
    link = next(i for i in issued if i.approver.employee_id == "E1004")  # Lars reads Dutch
    path = link.url.removeprefix(services.settings.base_url)
    app = create_app(services, RunGateway("none/none"), dispatch=False)
    with TestClient(app) as client:
        form = client.get(path)
        assert form.status_code == 200 and "csrf_token" in form.text
        set_status(services.engine, case.id, CaseStatus.CANCELLED)  # HR withdrew the leaver
        dutch = client.get(path)
        english = client.get(path, params={"lang": "en"})
        posted = client.post(path, data={"decision": "approve", "csrf_token": "x"})

    for page in (dutch, english, posted):
        assert page.status_code == 410
        assert "csrf_token" not in page.text
    assert '<html lang="nl">' in dutch.text and "ingetrokken door HR" in dutch.text
    assert '<html lang="en">' in english.text and "withdrawn by HR" in english.text
    assert "already been decided" not in english.text
    with Session(services.engine) as session:
        assert session.exec(select(ApprovalDecision)).all() == []
    actions = [e.action for e in events_for_case(services.engine, case.id)]
    assert "decision.recorded" not in actions
