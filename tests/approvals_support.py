"""Helpers for the approval tests: services over a real directory, and an open case."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from demo.directory import LocalDirectory
from offboarding.domain.cases import leaver_of
from offboarding.domain.models import Case
from offboarding.domain.revocation import inventory_all, store_plan
from offboarding.wiring.services import build_services
from offboarding.wiring.settings import Settings


def services_for(
    tmp_path: Path,
    directory: LocalDirectory,
    policy: dict[str, Any] | None = None,
    **connector: object,
):  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path / "home",
        connectors=[directory.connector_config(**connector)],
        policy=policy or {},
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
