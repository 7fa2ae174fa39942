"""Migrations build, from nothing, exactly the schema the models describe, on both backends;
they go down to nothing and up again; and the command line does the same."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from functions.db.engine import make_engine
from functions.db.migrate import context_options, current_revision, downgrade, upgrade
from functions.db.models import SCHEMAS, Base
from tests.db.conftest import BACKENDS, NewDatabase

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, new_database: NewDatabase) -> str:
    return new_database(request.param)


def _schema_diffs(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        options = context_options(connection.dialect.name)
        context = MigrationContext.configure(connection, opts=options)
        return list(compare_metadata(context, options["target_metadata"]))


def _check_constraints(engine: Engine) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Alembic does not compare CHECK constraints, so compare their names here."""
    with engine.connect() as connection:
        inspector = inspect(connection)
        in_database: dict[str, set[str]] = {}
        in_models: dict[str, set[str]] = {}
        for table in context_options(connection.dialect.name)["target_metadata"].sorted_tables:
            found = inspector.get_check_constraints(table.name, schema=table.schema)
            in_database[table.name] = {str(check["name"]) for check in found}
            in_models[table.name] = {
                str(c.name) for c in table.constraints if isinstance(c, CheckConstraint)
            }
        return in_database, in_models


HEAD = "0014"  # the newest revision in migrations/versions


def test_a_database_at_the_previous_revision_upgrades_keeping_its_rows(empty_url: str) -> None:
    upgrade(empty_url, "0001")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:
            schema = "" if connection.dialect.name == "sqlite" else "vwm."
            connection.exec_driver_sql(
                f"INSERT INTO {schema}system_settings (key, value, version, updated_at) "
                "VALUES ('k', '\"v\"', 1, '2026-01-01 00:00:00.000000')"
            )
        upgrade(empty_url)
        assert current_revision(empty_url) == HEAD
        with engine.connect() as connection:
            schema = "" if connection.dialect.name == "sqlite" else "vwm."
            count = connection.exec_driver_sql(f"SELECT count(*) FROM {schema}system_settings")
            assert count.scalar() == 1
        assert _schema_diffs(engine) == []
    finally:
        engine.dispose()


def _seed_runtime_and_worker(connection: Connection, shared: str, vwm: str, when: str) -> None:
    """Runtime r1 and worker w1, in plain SQL: the models may be ahead of the revision."""
    connection.exec_driver_sql(
        f"INSERT INTO {shared}runtimes (id, name, cli, cli_version, limits, created_at, "
        f"updated_at) VALUES ('r1', 'r', 'claude', '1', '{{}}', {when}, {when})"
    )
    connection.exec_driver_sql(
        f"INSERT INTO {vwm}workers (id, name, runtime_id, repo_url, repo_branch, "
        "instructions, auto_learning, timeouts, created_at, updated_at) VALUES "
        f"('w1', 'w', 'r1', 'https://x/r', 'main', '', false, '{{}}', {when}, {when})"
    )


def test_0003_drops_the_stored_harness_tokens_and_keeps_the_rest(empty_url: str) -> None:
    upgrade(empty_url, "0002")
    token = "tok-" + "x7" * 20  # what the local backend stored before tokens were derived
    state = {"workspace": "/w", "port": 20001, "pid": 42, "cli": "claude", "token": token}
    stored = {"session_id": "s1", "backend": "local", "state": state}
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:  # plain SQL: the models may be ahead of 0002
            shared, vwm = ("", "") if connection.dialect.name == "sqlite" else ("shared.", "vwm.")
            when = "'2026-01-01 00:00:00.000000'"
            _seed_runtime_and_worker(connection, shared, vwm, when)
            as_json = ":state" if connection.dialect.name == "sqlite" else "CAST(:state AS JSONB)"
            for session_id, runtime_state in (("s1", stored), ("s2", {})):
                connection.execute(
                    text(
                        f"INSERT INTO {vwm}sessions (id, worker_id, status, workspace, "
                        "runtime_state, created_at, last_activity_at) VALUES "
                        f"(:id, 'w1', 'ready', '/w', {as_json}, {when}, {when})"
                    ),
                    {"id": session_id, "state": json.dumps(runtime_state)},
                )
        upgrade(empty_url)
        with engine.connect() as connection:
            rows: dict[str, Any] = dict(
                connection.exec_driver_sql(
                    f"SELECT id, runtime_state FROM {vwm}sessions ORDER BY id"
                ).all()
            )
    finally:
        engine.dispose()
    migrated = {key: json.loads(v) if isinstance(v, str) else v for key, v in rows.items()}
    assert migrated["s1"] == {**stored, "state": {k: v for k, v in state.items() if k != "token"}}
    assert migrated["s2"] == {}
    if empty_url.startswith("sqlite:///"):  # nor in a free page or the journal of the file
        database = Path(empty_url.removeprefix("sqlite:///"))
        files = [database, *database.parent.glob(database.name + "-*")]
        assert all(token.encode() not in path.read_bytes() for path in files)


def test_0005_adds_the_event_tables_to_a_database_at_0004_keeping_its_jobs(empty_url: str) -> None:
    upgrade(empty_url, "0004")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:  # plain SQL: the models may be ahead of 0004
            shared, vwm = ("", "") if connection.dialect.name == "sqlite" else ("shared.", "vwm.")
            when = "'2026-01-01 00:00:00.000000'"
            _seed_runtime_and_worker(connection, shared, vwm, when)
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}sessions (id, worker_id, status, workspace, runtime_state, "
                f"created_at, last_activity_at) VALUES ('s1', 'w1', 'ready', '/w', '{{}}', {when}, "
                f"{when})"
            )
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}jobs (id, session_id, kind, prompt, mode, status, created_at) "
                f"VALUES ('j1', 's1', 'prompt', 'p', 'async', 'running', {when})"
            )
        upgrade(empty_url)
        assert current_revision(empty_url) == HEAD
        with engine.begin() as connection:
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}job_events (job_id, seq, kind, data, ts) "
                "VALUES ('j1', 1, 'job_started', '{}', 1.5)"
            )
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}processed_events (source, id, type, processed_at) "
                f"VALUES ('/vwm/harness/s1', 'j1.1', 'dev.vwm.job.started', {when})"
            )
            jobs = connection.exec_driver_sql(f"SELECT id, status FROM {vwm}jobs").all()
        assert [tuple(row) for row in jobs] == [("j1", "running")]
        with pytest.raises(IntegrityError), engine.begin() as connection:  # once per (job, seq)
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}job_events (job_id, seq, kind, data, ts) "
                "VALUES ('j1', 1, 'job_started', '{}', 1.5)"
            )
        with pytest.raises(IntegrityError), engine.begin() as connection:  # once per source+id
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}processed_events (source, id, type, processed_at) "
                f"VALUES ('/vwm/harness/s1', 'j1.1', 'dev.vwm.job.started', {when})"
            )
        downgrade(empty_url, "0004")
        names = {name.rpartition(".")[2] for name in _table_names(engine)}
        assert "jobs" in names
        assert not {"job_events", "processed_events"} & names
    finally:
        engine.dispose()


def test_0010_keeps_workers_and_learnings_and_checks_the_new_words(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:
            sqlite = connection.dialect.name == "sqlite"
            shared, vwm, telemetry = (
                ("", "", "") if sqlite else ("shared.", "vwm.", "vw_telemetry.")
            )
            when = "'2026-01-01 00:00:00.000000'"
            _seed_runtime_and_worker(connection, shared, vwm, when)
            connection.exec_driver_sql(
                f"INSERT INTO {telemetry}learnings (id, session_id, worker_id, summary, "
                f"files_changed, input_tokens, output_tokens, created_at) VALUES "
                f"('l1', 's1', 'w1', 'learnt', '[]', 3, 4, {when})"
            )
        upgrade(empty_url)
        with engine.begin() as connection:
            worker = connection.exec_driver_sql(
                f"SELECT revision, learning_mode FROM {vwm}workers"
            ).one()
            learning = connection.exec_driver_sql(
                f"SELECT status, mode, cache_read_tokens FROM {telemetry}learnings"
            ).one()
        assert tuple(worker) == (1, "direct")
        assert tuple(learning) == ("recorded", "direct", 0)
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE {vwm}workers SET learning_mode = 'sometimes'")
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE {telemetry}learnings SET status = 'maybe'")
        downgrade(empty_url, "0009")
        with engine.connect() as connection:
            count = connection.exec_driver_sql(f"SELECT count(*) FROM {vwm}workers").scalar()
        assert count == 1
    finally:
        engine.dispose()


def test_0011_adds_model_calls_and_reads_older_records_as_the_clis_usage(empty_url: str) -> None:
    upgrade(empty_url, "0010")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:
            sqlite = connection.dialect.name == "sqlite"
            shared, vwm, telemetry = (
                ("", "", "") if sqlite else ("shared.", "vwm.", "vw_telemetry.")
            )
            when = "'2026-01-01 00:00:00.000000'"
            _seed_runtime_and_worker(connection, shared, vwm, when)
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}sessions (id, worker_id, status, workspace, runtime_state, "
                f"created_at, last_activity_at) VALUES ('s1', 'w1', 'ready', '/w', '{{}}', {when}, "
                f"{when})"
            )
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}jobs (id, session_id, kind, prompt, mode, status, created_at) "
                f"VALUES ('j1', 's1', 'prompt', 'p', 'async', 'succeeded', {when})"
            )
            connection.exec_driver_sql(
                f"INSERT INTO {telemetry}requests (id, job_id, session_id, worker_id, runtime_id, "
                "cli, input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, "
                "reasoning_tokens, status, instructions_version, raw_output, created_at) VALUES "
                f"('q1', 'j1', 's1', 'w1', 'r1', 'claude', 3, 0, 0, 2, 0, 'succeeded', 0, '', {when})"
            )
        upgrade(empty_url)
        columns = "usage_source, cli_usage, usage_mismatch, model_calls"
        call = (
            f"INSERT INTO {telemetry}model_calls (id, job_id, session_id, worker_id, seq, api, "
            "streamed, outcome, input_tokens, cache_read_tokens, cache_write_tokens, "
            "output_tokens, reasoning_tokens, complete, started_at, latency_ms) VALUES "
            "('{id}', 'j1', 's1', 'w1', {seq}, 'anthropic', true, '{outcome}', 1, 0, 0, 1, 0, "
            f"true, {when}, 12.5)"
        )
        with engine.begin() as connection:
            record = connection.exec_driver_sql(f"SELECT {columns} FROM {telemetry}requests").one()
            connection.exec_driver_sql(call.format(id="c1", seq=1, outcome="ok"))
        assert (record[0], record[1], bool(record[2]), record[3]) == ("cli", None, False, 0)
        refused = [
            call.format(id="c2", seq=1, outcome="ok"),  # once per (job, seq)
            call.format(id="c3", seq=2, outcome="maybe"),
            call.format(id="c4", seq=0, outcome="ok"),
            f"UPDATE {telemetry}requests SET usage_source = 'guessed'",
        ]
        for statement in refused:
            with pytest.raises(IntegrityError), engine.begin() as connection:
                connection.exec_driver_sql(statement)
        downgrade(empty_url, "0010")
        names = {name.rpartition(".")[2] for name in _table_names(engine)}
        assert "model_calls" not in names
        with engine.connect() as connection:
            count = connection.exec_driver_sql(f"SELECT count(*) FROM {telemetry}requests")
            assert count.scalar() == 1
    finally:
        engine.dispose()


def test_0013_gives_each_setting_its_current_value_as_its_current_version(
    empty_url: str,
) -> None:
    upgrade(empty_url, "0012")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:  # plain SQL: the models may be ahead of 0012
            vwm = "" if connection.dialect.name == "sqlite" else "vwm."
            as_json = "" if connection.dialect.name == "sqlite" else "::jsonb"
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}system_settings (key, value, version, updated_at) VALUES "
                f"('global_instructions', '\"Be brief.\"'{as_json}, 3, "
                "'2026-01-01 10:00:00.000000'), "
                f"('repo_url_patterns', '[\"https://x/*\"]'{as_json}, 1, "
                "'2026-01-02 11:00:00.000000')"
            )
        upgrade(empty_url)
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                f"SELECT key, version, CAST(value AS TEXT), written_at "
                f"FROM {vwm}system_setting_versions ORDER BY key"
            ).all()
        copied = [
            (key, version, json.loads(value), _utc_text(when)) for key, version, value, when in rows
        ]
        assert copied == [
            ("global_instructions", 3, "Be brief.", "2026-01-01 10:00:00"),
            ("repo_url_patterns", 1, ["https://x/*"], "2026-01-02 11:00:00"),
        ]
        refused = [  # once per (key, version), only for a setting that exists, from version 1
            f"INSERT INTO {vwm}system_setting_versions (key, version, value, written_at) "
            f"VALUES ('global_instructions', 3, '1', '2026-01-03 00:00:00.000000')",
            f"INSERT INTO {vwm}system_setting_versions (key, version, value, written_at) "
            f"VALUES ('never_set', 1, '1', '2026-01-03 00:00:00.000000')",
            f"INSERT INTO {vwm}system_setting_versions (key, version, value, written_at) "
            f"VALUES ('global_instructions', 0, '1', '2026-01-03 00:00:00.000000')",
        ]
        for statement in refused:
            with pytest.raises(IntegrityError), engine.begin() as connection:
                connection.exec_driver_sql(statement)
        downgrade(empty_url, "0012")
        names = {name.rpartition(".")[2] for name in _table_names(engine)}
        assert "system_setting_versions" not in names
        with engine.connect() as connection:
            count = connection.exec_driver_sql(f"SELECT count(*) FROM {vwm}system_settings")
            assert count.scalar() == 2
    finally:
        engine.dispose()


def _utc_text(when: datetime | str) -> str:
    """A timestamp as read back in plain SQL (PostgreSQL: aware, SQLite: UTC text), to the
    second in UTC."""
    if isinstance(when, datetime):
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return when[:19]


def _table_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        inspector = inspect(connection)
        if connection.dialect.name == "sqlite":
            return set(inspector.get_table_names())
        return {f"{s}.{t}" for s in SCHEMAS for t in inspector.get_table_names(schema=s)}


def test_upgrade_from_empty_matches_the_models(empty_url: str) -> None:
    assert current_revision(empty_url) is None
    upgrade(empty_url)
    assert current_revision(empty_url) == HEAD
    engine = make_engine(empty_url)
    try:
        assert _schema_diffs(engine) == []
        in_database, in_models = _check_constraints(engine)
        assert in_database == in_models
        assert "ck_jobs_status" in in_database["jobs"]
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        upgrade(empty_url)
        tables = _table_names(engine)
        assert len(tables) == len(Base.metadata.tables) + 1  # and alembic_version
        downgrade(empty_url, "base")
        assert current_revision(empty_url) is None
        assert _table_names(engine) <= {"alembic_version", "vwm.alembic_version"}
        upgrade(empty_url)
        assert _table_names(engine) == tables
        assert _schema_diffs(engine) == []
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(empty_url: str) -> None:
    upgrade(empty_url)
    upgrade(empty_url)
    assert current_revision(empty_url) == HEAD


def test_postgresql_keeps_the_version_table_in_the_vwm_schema(new_database: NewDatabase) -> None:
    url = new_database("postgresql")
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            assert inspector.has_table("alembic_version", schema="vwm")
            assert not inspector.has_table("alembic_version", schema="public")
    finally:
        engine.dispose()


def test_command_line_upgrades_and_downgrades(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    run = [sys.executable, "-m", "functions.db.migrate", url]
    up = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert f"database at revision {HEAD}" in up.stdout
    down = subprocess.run(
        [*run, "--downgrade", "base"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    assert "database at revision None" in down.stdout


def test_0014_keeps_sessions_without_a_key_and_refuses_a_key_twice_per_worker(
    empty_url: str,
) -> None:
    upgrade(empty_url, "0013")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as connection:
            shared, vwm = ("", "") if connection.dialect.name == "sqlite" else ("shared.", "vwm.")
            when = "'2026-01-01 00:00:00.000000'"
            _seed_runtime_and_worker(connection, shared, vwm, when)
            for sid in ("s1", "s2"):
                connection.exec_driver_sql(
                    f"INSERT INTO {vwm}sessions (id, worker_id, status, workspace, runtime_state, "
                    f"created_at, last_activity_at) VALUES ('{sid}', 'w1', 'ready', '/w', '{{}}', "
                    f"{when}, {when})"
                )
            connection.exec_driver_sql(
                f"INSERT INTO {vwm}jobs (id, session_id, kind, prompt, mode, status, created_at) "
                f"VALUES ('j1', 's1', 'prompt', 'p', 'async', 'running', {when})"
            )
        upgrade(empty_url)

        def add(sid: str, key: str | None) -> None:
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    f"INSERT INTO {vwm}sessions (id, worker_id, status, workspace, runtime_state, "
                    f"created_at, last_activity_at, idempotency_key) VALUES ('{sid}', 'w1', "
                    f"'ready', '/w', '{{}}', {when}, {when}, "
                    f"{'NULL' if key is None else repr(key)})"
                )

        add("s3", None)  # sessions without a key never collide
        add("s4", "k")
        with pytest.raises(IntegrityError):
            add("s5", "k")
        with engine.connect() as connection:
            keys = connection.exec_driver_sql(
                f"SELECT id, idempotency_key FROM {vwm}sessions ORDER BY id"
            ).all()
        assert [tuple(row) for row in keys] == [
            ("s1", None),
            ("s2", None),
            ("s3", None),
            ("s4", "k"),
        ]
        downgrade(empty_url, "0013")  # with the jobs row: no table rebuild on SQLite
        assert current_revision(empty_url) == "0013"
    finally:
        engine.dispose()
