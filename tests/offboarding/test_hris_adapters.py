"""The Personio and AFAS Profit webhook adapters, through the real web app (in process,
dispatcher off) on real SQLite and PostgreSQL, with people looked up in a real slapd."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.models import AuditEvent, Case
from offboarding.intake.adapters import afas
from offboarding.orchestration.runs import RunGateway
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings
from offboarding.wiring.web import create_app

TOKEN = "personio-token-" + secrets.token_urlsafe(16)
PASSWORD = "afas-password-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    workdir = tmp_path_factory.mktemp("slapd")
    with LocalDirectory.start(workdir, admin_password=secrets.token_urlsafe(16)) as ldap:
        yield ldap, seed_demo_org(ldap, password="Pw-" + secrets.token_urlsafe(12))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    directory: tuple[LocalDirectory, DemoOrg],
    new_postgres_database: Callable[[], str],
) -> Iterator[tuple[Services, DemoOrg]]:
    ldap, org = directory
    home: Path = tmp_path_factory.mktemp("home")
    url = None if request.param == "sqlite" else new_postgres_database()
    settings = Settings(
        home=home,
        database_url=url,
        hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        personio_webhook_token=TOKEN,  # type: ignore[arg-type]
        afas_webhook_password=PASSWORD,  # type: ignore[arg-type]
        connectors=[ldap.connector_config(managers_group=org.managers_group_dn)],
    )
    services = build_services(settings)
    yield services, org
    services.engine.dispose()


def app_for(services: Services):  # type: ignore[no-untyped-def]
    # the dispatcher is off: these tests are about intake, not about Prefect runs
    return create_app(services, RunGateway("no-such-flow/no-such-deployment"), dispatch=False)


@pytest.fixture
def client(service: tuple[Services, DemoOrg]) -> Iterator[TestClient]:
    with TestClient(app_for(service[0])) as client:
        yield client


def personio_body(person_id: str, company: str = "c-4711", **changes: Any) -> bytes:
    event: dict[str, Any] = {
        "company_id": company,
        "event_name": "person.deleted",
        "occurred_at": "2026-11-24T09:30:00+01:00",
        "payload": {"id": person_id},
        "meta": {},
    }
    event.update(changes)
    return json.dumps(event).encode()


def post_personio(client: TestClient, body: bytes, token: str | None = TOKEN, query: str = ""):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    return client.post(f"/hris/personio{query}", content=body, headers=headers)


def cases(services: Services, employee_id: str) -> list[Case]:
    with Session(services.engine) as session:
        return list(session.exec(select(Case).where(Case.employee_id == employee_id)).all())


def refusals(services: Services, outcome: str) -> int:
    with Session(services.engine) as session:
        return session.exec(
            select(func.count())
            .select_from(AuditEvent)
            .where(col(AuditEvent.action) == "intake.refused")
            .where(col(AuditEvent.actor).startswith("hris:"))
            .where(col(AuditEvent.outcome) == outcome)
        ).one()


def test_a_personio_person_deleted_creates_one_case_with_the_mapped_fields(service, client) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    query = f"?requested_by={org.requester_id}&urgent=true"
    first = post_personio(client, personio_body("E1013"), query=query)
    assert first.status_code == 202, first.text
    [case] = cases(services, "E1013")
    assert case.id == first.json()["case_id"]
    assert case.event_id == "personio:c-4711:person.deleted:E1013"
    assert (case.employee_email, case.display_name) == ("jdekker@example.test", "Julia Dekker")
    assert case.requested_by == org.requester_id and case.urgent is True
    assert case.last_working_day == date(2026, 11, 24)
    assert case.occurred_at.replace(tzinfo=UTC) == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)

    # Personio's retry of the same notification: same case, nothing new
    again = post_personio(client, personio_body("E1013"), query=query)
    assert again.status_code == 200 and again.json()["case_id"] == case.id
    assert len(cases(services, "E1013")) == 1


@pytest.mark.parametrize(
    "token", [None, "Bearer wrong", TOKEN + "x"], ids=["none", "wrong", "longer"]
)
def test_a_wrong_personio_token_is_401_and_creates_nothing(service, client, token) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    before = refusals(services, "unauthorized")
    response = post_personio(
        client, personio_body("E1014"), token=token, query=f"?requested_by={org.requester_id}"
    )
    assert response.status_code == 401
    assert TOKEN not in response.text
    assert cases(services, "E1014") == []
    assert refusals(services, "unauthorized") == before + 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (personio_body("E1014", payload={}), ["body", "payload", "id"]),
        (personio_body("E1014", occurred_at="yesterday"), ["body", "occurred_at"]),
        (
            json.dumps({"event_name": "person.deleted", "payload": {"id": "E1014"}}).encode(),
            ["body", "company_id"],
        ),
    ],
    ids=["no-person-id", "bad-occurred-at", "no-company"],
)
def test_a_personio_payload_missing_a_field_is_422_naming_it(service, client, body, named) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    response = post_personio(client, body, query=f"?requested_by={org.requester_id}")
    assert response.status_code == 422
    assert named in [p["loc"] for p in response.json()["detail"]]
    assert "yesterday" not in response.text
    assert cases(services, "E1014") == []


def test_the_requester_must_be_in_the_webhook_url(service, client) -> None:  # type: ignore[no-untyped-def]
    services, _ = service
    response = post_personio(client, personio_body("E1014"))
    assert response.status_code == 422
    assert ["query", "requested_by"] in [p["loc"] for p in response.json()["detail"]]
    assert cases(services, "E1014") == []


def test_other_personio_events_start_nothing(service, client) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    body = personio_body("E1014", event_name="person.updated")
    response = post_personio(client, body, query=f"?requested_by={org.requester_id}")
    assert response.status_code == 200
    assert cases(services, "E1014") == []


def test_an_unknown_personio_person_is_422(service, client) -> None:  # type: ignore[no-untyped-def]
    _, org = service
    response = post_personio(
        client, personio_body("P-999"), query=f"?requested_by={org.requester_id}"
    )
    assert response.status_code == 422
    assert "unknown employee 'P-999'" in response.json()["detail"]


def test_two_personio_deliveries_for_one_person_at_once_give_one_case(service) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    app = app_for(services)
    query = f"?requested_by={org.requester_id}"

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            send = [
                http.post(
                    f"/hris/personio{query}",
                    content=personio_body("E1015", occurred_at=f"2026-11-24T09:30:0{i}+01:00"),
                    headers={"Authorization": TOKEN, "Content-Type": "application/json"},
                )
                for i in range(2)
            ]
            return list(await asyncio.gather(*send))

    answers = asyncio.run(both())
    assert sorted(r.status_code for r in answers) == [200, 202], [r.text for r in answers]
    assert answers[0].json()["case_id"] == answers[1].json()["case_id"]
    assert len(cases(services, "E1015")) == 1


def afas_body(**changes: Any) -> bytes:
    event: dict[str, Any] = {
        "EventId": "79d9b863-627b-497f-861e-147503472e8d",
        "EnvironmentId": "12345AA",
        "EventType": "workflow.action.executed",
        "Data": {"SubjectTypeId": 12, "SubjectId": 4711, "WorkflowName": "2448365B"},
        "Timestamp": "2026-06-08T09:20:56.1351565Z",
    }
    event.update(changes)
    return json.dumps(event).encode()


def post_afas(client: TestClient, body: bytes, signature: str | None):  # type: ignore[no-untyped-def]
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[afas.SIGNATURE_HEADER] = signature
    return client.post("/hris/afas?requested_by=E1001", content=body, headers=headers)


def test_afas_test_message_is_acknowledged(client) -> None:  # type: ignore[no-untyped-def]
    body = afas_body(EventType="test.executed", Data={"SubscriptionId": 1})
    assert post_afas(client, body, afas.sign(PASSWORD, body)).status_code == 200


@pytest.mark.parametrize(
    "signature",
    [None, "sha256=00", "WRONG-PASSWORD", "OTHER-BODY"],
    ids=["missing", "bad", "wrong-password", "other-body"],
)
def test_afas_bad_signature_is_401_and_audited(service, client, signature) -> None:  # type: ignore[no-untyped-def]
    services, _ = service
    body = afas_body()
    if signature == "WRONG-PASSWORD":
        signature = afas.sign("not-the-password", body)
    elif signature == "OTHER-BODY":
        signature = afas.sign(PASSWORD, afas_body(EventId="other"))
    before = refusals(services, "unauthorized")
    assert post_afas(client, body, signature).status_code == 401
    assert refusals(services, "unauthorized") == before + 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (afas_body(EventId=""), ["body", "EventId"]),
        (afas_body(Data={"SubjectTypeId": 12}), ["body", "Data", "SubjectId"]),
    ],
    ids=["no-event-id", "no-subject"],
)
def test_afas_payload_missing_a_field_is_422_naming_it(client, body, named) -> None:  # type: ignore[no-untyped-def]
    response = post_afas(client, body, afas.sign(PASSWORD, body))
    assert response.status_code == 422
    assert named in [p["loc"] for p in response.json()["detail"]]


def test_an_authentic_afas_workflow_notification_is_503_until_it_can_be_mapped(
    service, client
) -> None:  # type: ignore[no-untyped-def]
    services, _ = service
    with Session(services.engine) as session:
        before = session.exec(select(func.count()).select_from(Case)).one()
    body = afas_body()
    response = post_afas(client, body, afas.sign(PASSWORD, body))
    assert response.status_code == 503
    assert "GetConnector" in response.json()["detail"]
    with Session(services.engine) as session:
        assert session.exec(select(func.count()).select_from(Case)).one() == before
    assert refusals(services, "unmappable") >= 1


def test_an_adapter_without_its_secret_answers_404(directory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ldap, org = directory
    settings = Settings(
        home=tmp_path,
        connectors=[ldap.connector_config(managers_group=org.managers_group_dn)],
    )
    services = build_services(settings, engine=None)
    try:
        with TestClient(app_for(services)) as client:
            response = post_personio(client, personio_body("E1016"), token=TOKEN)
            assert response.status_code == 404
            assert "OFFBOARDING_PERSONIO_WEBHOOK_TOKEN" in response.json()["detail"]
            assert (
                post_afas(client, afas_body(), afas.sign(PASSWORD, afas_body())).status_code == 404
            )
        assert cases(services, "E1016") == []
    finally:
        services.engine.dispose()


def test_the_adapter_routes_are_documented_beside_the_own_contract(client) -> None:  # type: ignore[no-untyped-def]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/hris/events", "/hris/personio", "/hris/afas"} <= set(paths)
    assert {"401", "404", "422"} <= set(paths["/hris/personio"]["post"]["responses"])
