"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from offboarding.wiring.db import create_schema


def test_migrations_match_the_models(engine: Engine) -> None:  # `engine` ran the migrations
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == [], "a model changed without a migration: add one (see README)"


def test_upgrading_a_current_database_changes_nothing(engine: Engine) -> None:
    with engine.connect() as connection:
        before = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    create_schema(engine)
    create_schema(engine)
    with engine.connect() as connection:
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            == before
        )
    assert {"case", "audit_event", "revocation_plan", "approval_request"} <= set(
        inspect(engine).get_table_names()
    )
