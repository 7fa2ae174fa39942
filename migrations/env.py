"""Alembic's entry point, run by `functions.db.migrate` (the URL comes in `config.attributes`).

PostgreSQL: the three schemas are created if missing, and the version table lives in
`vwm.alembic_version`, so the database can be shared with other services. An advisory lock makes
concurrent upgraders take turns. SQLite: revisions create unqualified tables (SQLite has no
schemas, and its DDL silently drops foreign keys between tables of different schemas), the engine
maps the models' schemas away, and revisions that alter tables run in batch mode.

A caller may pass its own `connection` in `config.attributes`; its transaction is then its own.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, make_url

from functions.db.engine import make_engine
from functions.db.migrate import context_options
from functions.db.models import SCHEMAS

# Any constant will do, as long as it is ours: pg_advisory_xact_lock takes a bigint.
MIGRATION_LOCK_ID = 0x76776D


def _url() -> str:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run migrations through functions.db.migrate")
    return str(url)


def _configure(dialect: str, **kwargs: Any) -> None:
    context.configure(**context_options(dialect), **kwargs)


def _run(dialect: str) -> None:
    with context.begin_transaction():
        if dialect == "postgresql":
            context.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            for schema in SCHEMAS:
                context.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        context.run_migrations()


def run_offline() -> None:
    dialect = make_url(_url()).get_backend_name()
    if dialect == "sqlite":
        raise SystemExit("SQL scripts are for PostgreSQL; migrate an SQLite file directly")
    _configure(dialect, url=_url(), literal_binds=True)
    _run(dialect)


def run_online() -> None:
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection.dialect.name, connection=connection)
        _run(connection.dialect.name)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection.dialect.name, connection=connection)
            _run(connection.dialect.name)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
