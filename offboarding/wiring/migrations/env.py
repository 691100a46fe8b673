"""Alembic environment.

The service runs migrations on the connection `offboarding.wiring.db.create_schema` hands in.
From the command line (to write a new migration after changing a model):

    .venv/bin/alembic -c offboarding/wiring/migrations/alembic.ini revision --autogenerate -m "..."

uses the configured database (OFFBOARDING_DATABASE_URL, default SQLite in the data dir).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from offboarding.domain import models  # noqa: F401 - registers the tables


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    from offboarding.wiring.db import make_engine
    from offboarding.wiring.settings import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    with make_engine(settings.resolved_database_url).begin() as connection:
        run(connection)
