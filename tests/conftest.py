"""Shared fixtures: real peers only (PostgreSQL, SQLite, slapd, an SMTP server, the service)."""

from __future__ import annotations

import email
import email.policy
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from aiosmtpd.controller import Controller
from sqlalchemy.engine import Engine
from support import seed_prefect_database

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.wiring.db import create_schema, driver_url, make_engine
from offboarding.wiring.processes import free_port
from offboarding.wiring.service import RunningService, run_service
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings, SmtpSettings

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def new_postgres_database() -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the PostgreSQL running on this machine; drops them afterwards."""
    admin = sqlalchemy.create_engine(driver_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def make() -> str:
        name = f"offboarding_test_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_database(new_postgres_database: Callable[[], str]) -> str:
    return new_postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'offboarding.db'}"
    base = request.getfixturevalue("postgres_database")
    # one schema per test keeps tests independent on the shared database
    engine = sqlalchemy.create_engine(driver_url(base))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return base


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@dataclass
class Mailbox:
    """What a real SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]

    def wait_for(self, predicate, timeout: float = 180.0) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
        with self.arrived:
            self.arrived.wait_for(lambda: bool([m for m in self.messages if predicate(m)]), timeout)
        found = [m for m in self.messages if predicate(m)]
        assert found, "expected email did not arrive"
        return found


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.mailbox.arrived:
            self.mailbox.messages.append(message)  # type: ignore[arg-type]
            self.mailbox.arrived.notify_all()
        return "250 Message accepted for delivery"


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[tuple[str, int, Mailbox]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(_Handler(mailbox), hostname="127.0.0.1", port=port)
    controller.start()
    yield "127.0.0.1", port, mailbox
    controller.stop()


# -- the whole service, started the way `offboarding up` starts it ---------------


@dataclass
class Stack:
    running: RunningService
    settings: Settings
    services: Services
    directory: LocalDirectory
    org: DemoOrg
    password: str
    mailbox: object

    @property
    def engine(self) -> Engine:
        return self.services.engine


def start_stack(
    tmp: Path,
    database_url: str | None,
    smtp: tuple[str, int, Mailbox],
    *,
    connector: dict[str, Any] | None = None,
    **overrides: Any,
) -> Iterator[Stack]:
    password = "Pw-" + secrets.token_urlsafe(12)
    with LocalDirectory.start(tmp / "slapd", admin_password=secrets.token_urlsafe(16)) as directory:
        org = seed_demo_org(directory, password=password)
        host, port, mailbox = smtp
        settings = Settings(
            home=tmp / "home",
            database_url=database_url,
            port=free_port(),
            prefect_port=free_port(),
            smtp=SmtpSettings(host=host, port=port, starttls=False),
            hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            connectors=[
                directory.connector_config(
                    managers_group=org.managers_group_dn, **(connector or {})
                )
            ],
            **overrides,
        )
        if settings.resolved_prefect_database_url.startswith("sqlite"):
            seed_prefect_database(settings.home, tmp.parent)
        with run_service(settings, quiet=True) as running:
            services = build_services(settings, engine=make_engine(settings.resolved_database_url))
            yield Stack(running, settings, services, directory, org, password, mailbox)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, smtp_server, new_postgres_database
) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The service on PostgreSQL (a database of its own)."""
    yield from start_stack(
        tmp_path_factory.mktemp("stack-pg"), new_postgres_database(), smtp_server
    )


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """The service on its embedded default: SQLite in the data dir."""
    yield from start_stack(tmp_path_factory.mktemp("stack-sqlite"), None, smtp_server)
