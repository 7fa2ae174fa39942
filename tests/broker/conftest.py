"""The broker's database tests run on both backends, with the data layer's fixtures: a real
PostgreSQL database and an SQLite file, migrated to head once, emptied after each test."""

from __future__ import annotations

from tests.db.conftest import backend, engine, factory, migrated_url, new_database

__all__ = ["backend", "engine", "factory", "migrated_url", "new_database"]
