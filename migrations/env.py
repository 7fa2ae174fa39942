"""Alembic's entry point, run by `functions.db.migrate` (the URL comes in `config.attributes`).

PostgreSQL: the three schemas are created if missing, and the version table lives in
`vwm.alembic_version`, so the database can be shared with other services. An advisory lock makes
concurrent upgraders take turns. SQLite: schemas are mapped away by the engine
(`make_engine`), and later migrations that alter tables run in batch mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, MetaData, make_url

from functions.db.engine import make_engine
from functions.db.migrate import VERSION_TABLE_SCHEMA
from functions.db.models import SCHEMAS, Base, schemaless_metadata

# Any constant will do, as long as it is ours: pg_advisory_xact_lock takes a bigint.
MIGRATION_LOCK_ID = 0x76776D


def _url() -> str:
    return context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")


def _include_name(name: str | None, type_: str, _parents: object) -> bool:
    # Compare only our own schemas when the database holds others.
    return type_ != "schema" or name is None or name in SCHEMAS


def _configure(dialect: str, **kwargs: object) -> None:
    sqlite = dialect == "sqlite"
    target: MetaData = schemaless_metadata() if sqlite else Base.metadata
    context.configure(
        target_metadata=target,
        include_schemas=not sqlite,
        include_name=_include_name,
        version_table_schema=None if sqlite else VERSION_TABLE_SCHEMA,
        render_as_batch=sqlite,
        compare_type=True,
        **kwargs,
    )


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
