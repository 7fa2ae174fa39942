"""Apply the schema migrations in `migrations/` to a database, with Alembic configured in code
(no alembic.ini). Called by `vwm up` and deployment jobs before the functions start serving, or
by hand: `python -m functions.db.migrate URL [REVISION]` (`--downgrade REVISION` to go back).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

from functions.db.engine import make_engine
from functions.db.models import SCHEMAS, Base, schemaless_metadata

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
VERSION_TABLE = "alembic_version"
VERSION_TABLE_SCHEMA = "vwm"  # on PostgreSQL; SQLite has no schemas


def alembic_config(url: str) -> Config:
    """An Alembic config for `url`; `migrations/env.py` reads the URL from `attributes`, which,
    unlike the ini options, leaves a `%` in a password alone."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["url"] = url
    return config


def context_options(dialect: str) -> dict[str, Any]:
    """How Alembic sees our schema on `dialect`, for `migrations/env.py` and for comparing a
    migrated database with the models (`target_metadata` is what it should look like)."""
    sqlite = dialect == "sqlite"
    return {
        "target_metadata": schemaless_metadata() if sqlite else Base.metadata,
        "include_schemas": not sqlite,
        "include_name": _include_name,
        "version_table_schema": None if sqlite else VERSION_TABLE_SCHEMA,
        "render_as_batch": sqlite,  # SQLite alters tables by copying them
        "compare_type": True,
    }


def _include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    # Look only at our own schemas when the database holds other services' too.
    return type_ != "schema" or name is None or name in SCHEMAS


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            schema = None if connection.dialect.name == "sqlite" else VERSION_TABLE_SCHEMA
            if not inspect(connection).has_table(VERSION_TABLE, schema=schema):
                return None
            table = f"{schema}.{VERSION_TABLE}" if schema else VERSION_TABLE
            return connection.exec_driver_sql(f"SELECT version_num FROM {table}").scalar()  # noqa: S608
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m functions.db.migrate", description=__doc__)
    parser.add_argument("url", help="postgresql+pg8000://user@host/db or sqlite:///path")
    parser.add_argument("revision", nargs="?", default="head", help="upgrade to (default: head)")
    parser.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead")
    args = parser.parse_args(argv)
    if args.downgrade:
        downgrade(args.url, args.downgrade)
    else:
        upgrade(args.url, args.revision)
    print(f"database at revision {current_revision(args.url)}")


if __name__ == "__main__":
    main()
