"""The mails around deputies, against a real slapd, a real SMTP server, SQLite and
PostgreSQL: `offboarding deputy link` mails the manager their personal link (never logging
it), and naming a deputy — on the CLI or on the signed page — tells the deputy for whom and
for which period they act."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from approvals.deputies import name_deputy
from approvals.deputy_pages import deputy_router, mail_deputy_link, tell_deputy
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.cli import app
from offboarding.domain.models import AuditEvent, Deputyship, utcnow
from offboarding.notification.rendering import render_email, template_env
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings, SmtpSettings

LARS, NOOR, IRIS, MILAN = "E1004", "E1007", "E1011", "E1016"
LARS_MAIL, NOOR_MAIL, IRIS_MAIL = (
    "lsmit@example.test",
    "ndegroot@example.test",
    "ihendriks@example.test",
)


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDirectory]:
    """One slapd for the module: these tests only read it."""
    path = tmp_path_factory.mktemp("slapd")
    with LocalDirectory.start(path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        d.org = seed_demo_org(d, password=secrets.token_urlsafe(12))  # type: ignore[attr-defined]
        yield d


def connector(directory: LocalDirectory) -> dict[str, object]:
    return directory.connector_config(managers_group=directory.org.managers_group_dn)  # type: ignore[attr-defined]


@pytest.fixture
def cli_env(tmp_path: Path, engine: Engine, database_url: str, directory, monkeypatch):  # type: ignore[no-untyped-def]
    """The CLI's configuration, from the environment as an operator sets it."""
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("OFFBOARDING_DATABASE_URL", database_url)
    monkeypatch.setenv("OFFBOARDING_CONNECTORS", json.dumps([connector(directory)]))
    monkeypatch.setenv("OFFBOARDING_SIGNING_KEY", secrets.token_urlsafe(32))
    monkeypatch.delenv("OFFBOARDING_SMTP__HOST", raising=False)
    return monkeypatch


def with_smtp(monkeypatch, smtp_server) -> None:  # type: ignore[no-untyped-def]
    host, port, _ = smtp_server
    monkeypatch.setenv("OFFBOARDING_SMTP__HOST", host)
    monkeypatch.setenv("OFFBOARDING_SMTP__PORT", str(port))
    monkeypatch.setenv("OFFBOARDING_SMTP__STARTTLS", "false")


def cli_services() -> Services:
    """The services the CLI builds from the same environment."""
    return build_services(Settings())


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def deputy_link_in(message: EmailMessage) -> str:
    found = re.search(r"\S+/approvals/deputy/(\S+)", text_of(message))
    assert found, text_of(message)
    return found.group(0)


def events(engine: Engine, action: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action)))


# --- the manager's link -------------------------------------------------------------------


def test_with_a_mail_server_the_link_is_mailed_in_the_managers_language(  # type: ignore[no-untyped-def]
    cli_env, smtp_server, engine
) -> None:
    with_smtp(cli_env, smtp_server)
    _, _, mailbox = smtp_server
    before = len(mailbox.messages)
    with capture_logs() as logs:
        dutch = CliRunner().invoke(app, ["deputy", "link", LARS])
        english = CliRunner().invoke(app, ["deputy", "link", IRIS])
    assert dutch.exit_code == 0, dutch.output
    assert english.exit_code == 0, english.output
    assert f"mailed Lars Smit <{LARS_MAIL}>" in dutch.stdout
    assert "/approvals/deputy/" not in dutch.output + english.output  # a credential: not shown

    mailbox.wait_for(lambda m: IRIS_MAIL in str(m["To"]) and "deputy/" in text_of(m))
    lars, iris = mailbox.messages[before:]  # nothing else was sent
    assert LARS_MAIL in str(lars["To"]) and IRIS_MAIL in str(iris["To"])
    assert "plaatsvervanger" in str(lars["Subject"])
    assert "deputy" in str(iris["Subject"]) and "plaatsvervanger" not in text_of(iris)
    services = cli_services()
    assert services.deputy_links is not None
    for message, manager in ((lars, LARS), (iris, IRIS)):
        link = deputy_link_in(message)
        assert link in html_of(message)
        assert services.deputy_links.read(link.rsplit("/", 1)[1]) == manager
        token = link.rsplit("/", 1)[1]
        assert not [entry for entry in logs if token in repr(entry)]  # never logged
        recorded = " ".join(e.details for e in events(engine, "email.deputy_link"))
        assert token not in recorded  # nor in the audit log
    mailed = [json.loads(e.details) for e in events(engine, "email.deputy_link")]
    assert sorted((d["manager_id"], d["to"], d["language"]) for d in mailed) == [
        (LARS, LARS_MAIL, "nl"),
        (IRIS, IRIS_MAIL, "en"),
    ]


def test_print_shows_the_link_and_mails_nothing(cli_env, smtp_server, engine) -> None:  # type: ignore[no-untyped-def]
    with_smtp(cli_env, smtp_server)
    _, _, mailbox = smtp_server
    before = len(mailbox.messages)
    result = CliRunner().invoke(app, ["deputy", "link", NOOR, "--print"])
    assert result.exit_code == 0, result.output
    link = re.search(r"\S+/approvals/deputy/(\S+)", result.stdout)
    assert link is not None
    services = cli_services()
    assert services.deputy_links is not None
    assert services.deputy_links.read(link.group(1)) == NOOR
    assert len(mailbox.messages) == before  # sending is synchronous: nothing went out
    assert events(engine, "email.deputy_link") == []


def test_without_a_mail_server_the_link_is_printed_and_mail_asked_for_goes_to_the_outbox(  # type: ignore[no-untyped-def]
    cli_env, tmp_path, engine
) -> None:
    printed = CliRunner().invoke(app, ["deputy", "link", LARS])
    assert printed.exit_code == 0, printed.output
    assert "/approvals/deputy/" in printed.stdout
    outbox = tmp_path / "home" / "outbox"
    assert not list(outbox.glob("*.eml"))

    mailed = CliRunner().invoke(app, ["deputy", "link", LARS, "--mail"])
    assert mailed.exit_code == 0, mailed.output
    assert "the outbox" in mailed.stdout and "/approvals/deputy/" not in mailed.stdout
    [written] = outbox.glob("*.eml")
    assert "/approvals/deputy/" in written.read_text()
    assert len(events(engine, "email.deputy_link")) == 1


def test_only_a_manager_or_approver_gets_a_link(cli_env, smtp_server) -> None:  # type: ignore[no-untyped-def]
    with_smtp(cli_env, smtp_server)
    result = CliRunner().invoke(app, ["deputy", "link", MILAN])
    assert result.exit_code == 1
    assert f"{MILAN} is not a manager or approver" in result.stderr


def test_a_manager_without_an_email_address_is_told_what_to_do(cli_env, smtp_server) -> None:  # type: ignore[no-untyped-def]
    from approvals.deputies import DeputyProblem
    from connectors.base import Person

    with_smtp(cli_env, smtp_server)
    services = cli_services()
    nobody = Person(employee_id=LARS, display_name="Lars Smit", email="", language="nl")
    with pytest.raises(DeputyProblem, match=r"no email address.*--print"):
        mail_deputy_link(services, nobody, actor="operator:test")


# --- the deputy hears of it ---------------------------------------------------------------


def test_naming_a_deputy_on_the_cli_tells_the_deputy(cli_env, smtp_server, engine) -> None:  # type: ignore[no-untyped-def]
    with_smtp(cli_env, smtp_server)
    _, _, mailbox = smtp_server
    before = len(mailbox.messages)
    first, last = date.today() + timedelta(days=3), date.today() + timedelta(days=9)
    result = CliRunner().invoke(
        app, ["deputy", "add", LARS, NOOR, "--from", first.isoformat(), "--until", last.isoformat()]
    )
    assert result.exit_code == 0, result.output
    mailbox.wait_for(
        lambda m: NOOR_MAIL in str(m["To"]) and "plaatsvervanger van Lars Smit" in str(m["Subject"])
    )
    [mail] = mailbox.messages[before:]
    text = " ".join(text_of(mail).split())
    assert "Lars Smit (E1004)" in text
    assert f"Vanaf: {first.isoformat()} 00:00 " in text  # company time, from the first day
    assert f"Tot: {(last + timedelta(days=1)).isoformat()} 00:00 " in text
    [told] = events(engine, "email.deputy_named")
    assert json.loads(told.details)["to"] == NOOR_MAIL
    with Session(engine) as session:
        row = session.exec(select(Deputyship)).one()
    assert tell_deputy(cli_services(), row) is None  # once per deputyship
    assert len(events(engine, "email.deputy_named")) == 1


def test_naming_a_deputy_on_the_page_tells_the_deputy_in_their_language(  # type: ignore[no-untyped-def]
    tmp_path, engine, directory, smtp_server
) -> None:
    host, port, mailbox = smtp_server
    before = len(mailbox.messages)
    settings = Settings(
        home=tmp_path / "page-home",
        connectors=[connector(directory)],
        smtp=SmtpSettings(host=host, port=port, starttls=False),
    )
    services = build_services(settings, engine=engine)
    web = FastAPI()
    web.include_router(deputy_router(services), prefix="/approvals")
    assert services.deputy_links is not None
    path = f"/approvals/deputy/{services.deputy_links.issue(NOOR)}"
    with TestClient(web) as client:
        form = client.get(path)
        assert form.status_code == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf is not None
        today = date.today()
        posted = client.post(
            path,
            data={
                "deputy_id": IRIS,
                "valid_from": today.isoformat(),
                "valid_until": (today + timedelta(days=4)).isoformat(),
                "csrf_token": csrf.group(1),
            },
        )
    assert posted.status_code == 200, posted.text
    mailbox.wait_for(
        lambda m: IRIS_MAIL in str(m["To"]) and "deputy of Noor de Groot" in str(m["Subject"])
    )
    [mail] = mailbox.messages[before:]
    text = " ".join(text_of(mail).split())
    assert "Noor de Groot (E1007)" in text and "one approver" in text
    assert "Noor de Groot" in html_of(mail)


def test_a_mail_failure_leaves_the_deputyship_standing(tmp_path, engine, directory) -> None:  # type: ignore[no-untyped-def]
    from offboarding.wiring.processes import free_port

    settings = Settings(
        home=tmp_path / "down-home",
        connectors=[connector(directory)],
        smtp=SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False),  # nobody there
    )
    services = build_services(settings, engine=engine)
    row = name_deputy(
        services,
        manager_id=LARS,
        deputy_id=NOOR,
        starts_at=utcnow(),
        ends_at=utcnow() + timedelta(days=2),
        actor="operator:test",
    )
    assert tell_deputy(services, row) is None
    outcomes = sorted(e.outcome for e in events(engine, "email.deputy_named"))
    assert outcomes == ["failed", "ok"]  # claimed, then the failure recorded
    with Session(engine) as session:
        assert session.get(Deputyship, row.id) is not None


@pytest.mark.parametrize("name", ["deputy_link", "deputy_named"])
@pytest.mark.parametrize("language", ["nl", "en"])
def test_the_templates_need_every_value_and_load_nothing_from_outside(
    name: str, language: str
) -> None:
    import jinja2

    env = template_env()
    context: dict[str, object] = {
        "deputy_link": {
            "manager": {"display_name": "Zoë Ëmans"},
            "link": "https://offboarding.example.nl/approvals/deputy/t0k3n",
            "expires_at": "2026-12-04 09:30 CET",
            "zone": "Europe/Amsterdam",
            "managers_only": True,
        },
        "deputy_named": {
            "deputy": {"display_name": "Zoë Ëmans"},
            "manager": {"display_name": "Lars Smit", "employee_id": "E1004"},
            "starts_at": "2026-12-01 00:00 CET",
            "ends_at": "2026-12-15 00:00 CET",
        },
    }[name]  # type: ignore[assignment]
    email = render_email(env, name, language, context)
    assert email.html.startswith("<!DOCTYPE html>") and f'<html lang="{language}">' in email.html
    assert f"<title>{email.subject}</title>" in email.html
    assert "<img" not in email.html and "<script" not in email.html
    for key in context:
        with pytest.raises(jinja2.UndefinedError):
            render_email(env, name, language, {k: v for k, v in context.items() if k != key})
