"""The whole service, started the way `offboarding up` starts it, against real peers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from offboarding.db import make_engine
from offboarding.localdir import LocalDirectory
from offboarding.localdir_seed import DemoOrg, seed_demo_org
from offboarding.service import RunningService, free_port, run_service
from offboarding.services import Services, build_services
from offboarding.settings import Settings, SmtpSettings


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
    tmp: Path, database_url: str | None, smtp: tuple[str, int, object]
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
            connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
        )
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
