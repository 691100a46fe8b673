"""AFAS Profit notifications resolved through a GetConnector: the real web app (in process,
dispatcher off) on real SQLite and PostgreSQL, people in a real slapd, and AFAS's REST API
as a stateful fake over HTTP (`afas_fake`)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session, func, select

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg
from offboarding.domain.models import Case
from offboarding.intake.adapters import afas, afas_lookup
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import AfasSettings, Settings
from tests.offboarding.afas_fake import NOT_SUPPORTED, DossierItem, FakeAfas, RunningAfas, serving
from tests.offboarding.test_hris_adapters import (
    PASSWORD,
    afas_body,
    app_for,
    cases,
    directory,
    refusals,
)

__all__ = ["directory"]  # the slapd fixture, shared with the other adapter tests

AFAS_TOKEN = secrets.token_hex(32).upper()  # the <data> of the app connector's token
CONNECTOR = "Offboarding_Dossieritems"
LEAVING, INSTANT, LEAVE_OF_ABSENCE = 20, 21, 30  # dossier item types in the fake environment


@pytest.fixture(scope="module")
def afas_env() -> Iterator[RunningAfas]:
    fake = FakeAfas(tokens={AFAS_TOKEN})
    fake.publish(CONNECTOR, type_ids={LEAVING, INSTANT})
    fake.publish("Offboarding_Zonder_Datum", {LEAVING}, ["SubjectId", "EmployeeId"])
    with serving(fake) as running:
        yield running


def afas_settings(running: RunningAfas, **changes: Any) -> AfasSettings:
    values: dict[str, Any] = {
        "environment": "12345",
        "token": AFAS_TOKEN,
        "base_url": running.base_url,
        "urgent_reasons": ["OSV"],
    }
    values.update(changes)
    return AfasSettings.model_validate(values)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    directory: tuple[LocalDirectory, DemoOrg],
    new_postgres_database: Callable[[], str],
    afas_env: RunningAfas,
) -> Iterator[tuple[Services, DemoOrg]]:
    ldap, org = directory
    settings = Settings(
        home=tmp_path_factory.mktemp("home"),
        database_url=None if request.param == "sqlite" else new_postgres_database(),
        hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
        afas_webhook_password=PASSWORD,  # type: ignore[arg-type]
        afas=afas_settings(afas_env),
        connectors=[ldap.connector_config(managers_group=org.managers_group_dn)],
    )
    services = build_services(settings)
    yield services, org
    services.engine.dispose()


def with_afas(services: Services, afas_config: AfasSettings | None) -> Services:
    """The same service (database, directory) with other AFAS settings."""
    return dataclasses.replace(
        services, settings=services.settings.model_copy(update={"afas": afas_config})
    )


@pytest.fixture
def client(service: tuple[Services, DemoOrg]) -> Iterator[TestClient]:
    with TestClient(app_for(service[0])) as client:
        yield client


def notification(subject_id: int, event_type: str = "workflow.action.executed") -> bytes:
    return afas_body(
        EventId=str(uuid.uuid4()),
        EventType=event_type,
        Data={"SubjectTypeId": LEAVING, "SubjectId": subject_id, "WorkflowName": "2448365B"},
    )


def deliver(client: TestClient, body: bytes, query: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", afas.SIGNATURE_HEADER: afas.sign(PASSWORD, body)}
    return client.post(f"/hris/afas{query}", content=body, headers=headers)


def case_count(services: Services) -> int:
    with Session(services.engine) as session:
        return session.exec(select(func.count()).select_from(Case)).one()


def test_a_leaving_dossier_item_opens_one_case_from_the_get_connector_row(
    service, client, afas_env
) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(
        DossierItem(5001, LEAVING, "E1013", date(2026, 11, 30), reason="Eigen verzoek")
    )
    body = notification(5001)
    query = f"?requested_by={org.requester_id}"
    first = deliver(client, body, query)
    assert first.status_code == 202, first.text
    [case] = cases(services, "E1013")
    assert case.id == first.json()["case_id"]
    assert case.event_id == f"afas:12345AA:{json.loads(body)['EventId']}"
    assert (case.employee_email, case.display_name) == ("jdekker@example.test", "Julia Dekker")
    assert case.last_working_day == date(2026, 11, 30)  # "Datum uit dienst", not the Timestamp
    assert case.urgent is False and case.requested_by == org.requester_id
    asked = [s for s in afas_env.fake.seen if "filtervalues=5001" in s.query][-1]
    assert asked.status == 200 and asked.path == "/ProfitRestServices/connectors/" + CONNECTOR
    assert "filterfieldids=SubjectId" in asked.query and "operatortypes=1" in asked.query

    # Profit's retry of the same notification: the same case, nothing new
    again = deliver(client, body, query)
    assert again.status_code == 200 and again.json()["case_id"] == case.id
    assert len(cases(services, "E1013")) == 1


@pytest.mark.parametrize(
    ("item", "query"),
    [
        (DossierItem(5002, INSTANT, "E1014", date(2026, 12, 1), instant_dismissal=True), ""),
        (DossierItem(5003, LEAVING, "E1015", date(2026, 12, 1), reason="OSV"), ""),
        (
            DossierItem(5004, LEAVING, "E1016", date(2026, 12, 1), reason="Eigen verzoek"),
            "&urgent=true",
        ),
    ],
    ids=["instant-dismissal-flag", "urgent-reason", "webhook-url"],
)
def test_an_instant_dismissal_opens_an_urgent_case(service, client, afas_env, item, query) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(item)
    response = deliver(
        client, notification(item.subject_id), f"?requested_by={org.requester_id}{query}"
    )
    assert response.status_code == 202, response.text
    [case] = cases(services, item.employee_id)
    assert case.urgent is True and case.last_working_day == item.end_date


def test_the_same_notification_twice_at_once_gives_one_case(service, afas_env) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(DossierItem(5005, LEAVING, "E1017", date(2026, 11, 28)))
    body = notification(5005)
    headers = {"Content-Type": "application/json", afas.SIGNATURE_HEADER: afas.sign(PASSWORD, body)}
    app = app_for(services)

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
            url = f"/hris/afas?requested_by={org.requester_id}"
            return list(
                await asyncio.gather(*(http.post(url, content=body, headers=headers) for _ in "ab"))
            )

    answers = asyncio.run(both())
    assert sorted(r.status_code for r in answers) == [200, 202], [r.text for r in answers]
    assert answers[0].json()["case_id"] == answers[1].json()["case_id"]
    assert len(cases(services, "E1017")) == 1


def test_a_dossier_item_that_is_no_leaving_starts_nothing(service, client, afas_env) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    fake = afas_env.fake
    fake.add_item(DossierItem(5006, LEAVE_OF_ABSENCE, "E1018", None))
    before_cases, before_lookups = case_count(services), fake.lookups(5006)
    response = deliver(
        client, notification(5006, "subject.created"), f"?requested_by={org.requester_id}"
    )
    assert response.status_code == 200
    assert response.json()["detail"] == "received; starts no offboarding"
    assert fake.lookups(5006) == before_lookups + 1  # asked, and the GetConnector had no row
    assert case_count(services) == before_cases and cases(services, "E1018") == []

    # a reaction on a dossier item starts nothing and asks nothing
    reaction = notification(5006, "subject.reaction.created")
    assert deliver(client, reaction, f"?requested_by={org.requester_id}").status_code == 200
    assert fake.lookups(5006) == before_lookups + 1


def test_afas_down_is_503_creates_nothing_and_the_next_delivery_succeeds(
    service, client, afas_env
) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    fake = afas_env.fake
    fake.add_item(DossierItem(5007, LEAVING, "E1019", date(2026, 12, 15)))
    body, query = notification(5007), f"?requested_by={org.requester_id}"
    before = refusals(services, "vendor_unavailable")
    fake.maintenance = True
    try:
        down = deliver(client, body, query)
    finally:
        fake.maintenance = False
    assert down.status_code == 503, down.text
    assert afas_env.host in down.json()["detail"] and "HTTP 503" in down.json()["detail"]
    assert "scheduled maintenance" in down.json()["detail"]
    assert cases(services, "E1019") == []
    assert refusals(services, "vendor_unavailable") == before + 1

    # Profit delivers the same notification again once AFAS is back
    back = deliver(client, body, query)
    assert back.status_code == 202, back.text
    assert len(cases(services, "E1019")) == 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_afas_unreachable_or_slow_is_503_naming_the_host(service, afas_env) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(DossierItem(5008, LEAVING, "E1020", date(2026, 12, 15)))
    body, query = notification(5008), f"?requested_by={org.requester_id}"
    nowhere = afas_settings(
        afas_env, base_url=f"http://127.0.0.1:{closed_port()}/ProfitRestServices"
    )
    with TestClient(app_for(with_afas(services, nowhere))) as client:
        response = deliver(client, body, query)
    assert response.status_code == 503
    assert "AFAS 127.0.0.1 unreachable" in response.json()["detail"]

    slow = afas_settings(afas_env, timeout_seconds=0.3)
    afas_env.fake.hold = threading.Event()  # the fake answers only when released
    try:
        with TestClient(app_for(with_afas(services, slow))) as client:
            response = deliver(client, body, query)
    finally:
        afas_env.fake.hold.set()
        afas_env.fake.hold = None
    assert response.status_code == 503
    assert "no answer in time" in response.json()["detail"]
    assert cases(services, "E1020") == []


@pytest.mark.parametrize("refusal", ["bad-token", "ip-restriction"])
def test_a_refused_token_is_503_naming_the_host_never_the_token(service, afas_env, refusal) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    wrong = "WRONG" + secrets.token_hex(16).upper()
    config = afas_settings(afas_env, token=wrong if refusal == "bad-token" else AFAS_TOKEN)
    afas_env.fake.add_item(DossierItem(5009, LEAVING, "E1012", date(2026, 12, 1)))
    afas_env.fake.ip_restricted = refusal == "ip-restriction"
    try:
        with TestClient(app_for(with_afas(services, config))) as client:
            response = deliver(client, notification(5009), f"?requested_by={org.requester_id}")
    finally:
        afas_env.fake.ip_restricted = False
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert f"AFAS {afas_env.host}" in detail and "token" in detail
    assert ("HTTP 401" if refusal == "bad-token" else "HTTP 403") in detail
    for secret in (wrong, AFAS_TOKEN, afas_lookup.authorization(wrong).split()[1]):
        assert secret not in response.text
    assert afas_env.fake.seen[-1].status == (401 if refusal == "bad-token" else 403)
    assert cases(services, "E1012") == []


def test_a_get_connector_not_in_the_app_connector_is_503_with_profits_message(
    service, afas_env
) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    config = afas_settings(afas_env, get_connector="Offboarding_Onbekend")
    with TestClient(app_for(with_afas(services, config))) as client:
        response = deliver(client, notification(5001), f"?requested_by={org.requester_id}")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "GetConnector Offboarding_Onbekend" in detail and NOT_SUPPORTED in detail
    assert "Profit log reference" in detail


def test_a_row_without_a_needed_field_is_422_naming_the_get_connector_field(
    service, client, afas_env
) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(DossierItem(5010, LEAVING, "E1011", None))  # no date out of service
    response = deliver(client, notification(5010), f"?requested_by={org.requester_id}")
    assert response.status_code == 422
    [found] = response.json()["detail"]
    assert found["loc"] == ["afas", CONNECTOR, "EmploymentEndDate"]
    assert "empty" in found["msg"]

    # a GetConnector that does not return the field at all
    config = afas_settings(afas_env, get_connector="Offboarding_Zonder_Datum")
    with TestClient(app_for(with_afas(services, config))) as other:
        response = deliver(other, notification(5010), f"?requested_by={org.requester_id}")
    assert response.status_code == 422
    [found] = response.json()["detail"]
    assert found["loc"] == ["afas", "Offboarding_Zonder_Datum", "EmploymentEndDate"]
    assert "Field required" in found["msg"]
    assert cases(services, "E1011") == []


def test_an_employee_number_unknown_to_the_directory_is_422(service, client, afas_env) -> None:  # type: ignore[no-untyped-def]
    _, org = service
    afas_env.fake.add_item(DossierItem(5011, LEAVING, "000001005", date(2026, 12, 1)))
    response = deliver(client, notification(5011), f"?requested_by={org.requester_id}")
    assert response.status_code == 422
    assert "unknown employee '000001005'" in response.json()["detail"]


def test_without_afas_settings_a_notification_stays_unmappable(service, afas_env) -> None:  # type: ignore[no-untyped-def]
    services, org = service
    afas_env.fake.add_item(DossierItem(5012, LEAVING, "E1010", date(2026, 12, 1)))
    before = afas_env.fake.lookups(5012)
    with TestClient(app_for(with_afas(services, None))) as client:
        response = deliver(client, notification(5012), f"?requested_by={org.requester_id}")
    assert response.status_code == 503 and response.json()["reason"] == "unmappable"
    assert "OFFBOARDING_AFAS__TOKEN" in response.json()["detail"]
    assert afas_env.fake.lookups(5012) == before
    assert cases(services, "E1010") == []


def test_the_afas_token_header_is_the_documented_one() -> None:
    # AFASSoftware/OASContent authentication.md: the example token and its Base64 form
    data = "949C1A9CD9AE4797950D94F55A7A4D056770472D4963CB9A8D3800BEE0CCE6A2"
    xml = f"<token><version>1</version><data>{data}</data></token>"
    expected = "AfasToken " + base64.b64encode(xml.encode()).decode()
    assert expected.startswith("AfasToken PHRva2VuPjx2ZXJzaW9uPjE8L3ZlcnNpb24+PGRhdGE+OTQ5QzFB")
    assert afas_lookup.authorization(data) == expected
    assert afas_lookup.authorization(xml) == expected  # the whole token, as Profit shows it


def test_the_lookup_speaks_to_an_injected_transport(afas_env) -> None:  # type: ignore[no-untyped-def]
    afas_env.fake.add_item(DossierItem(5013, INSTANT, "E1009", date(2027, 1, 4)))
    with afas_lookup.new_client(afas_settings(afas_env), httpx.HTTPTransport()) as client:
        leaver = afas_lookup.find_leaver(client, get_connector=CONNECTOR, subject_id="5013")
        nothing = afas_lookup.find_leaver(client, get_connector=CONNECTOR, subject_id="999999")
    assert leaver == afas_lookup.Leaver("5013", "E1009", date(2027, 1, 4), urgent=False)
    assert nothing is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"base_url": "http://afas.example.test/ProfitRestServices"}, "base_url"),
        ({"environment": "12345.evil.example"}, "environment"),
        ({"get_connector": "../metainfo"}, "get_connector"),
    ],
    ids=["plain-http", "host-in-environment", "path-in-connector"],
)
def test_afas_settings_refuse_what_would_leak_the_token(changes, named, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    values = {"environment": "12345", "token": AFAS_TOKEN, **changes}
    with pytest.raises(ValidationError) as refused:
        AfasSettings.model_validate(values)
    assert [named] == [e["loc"][0] for e in refused.value.errors()]
    assert AFAS_TOKEN not in str(refused.value)
