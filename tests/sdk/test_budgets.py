"""Budgets in the SDK (`client.admin.worker_budget`, `set_worker_budget`, `budget=` on
`VirtualWorker.session`, `VWSession.set_budget`) and on the command line (`vwm worker budget`,
`vwm session budget`, `vwm session get`), against the real control plane (docs/budgets.md).

Real rather than the fake control plane: what is under test is the wire contract (partial
updates, null removing a limit, used and left, the 422 and 404 answers), which a fake would
only restate. No CLI is needed: sessions start with ``wait=False`` and no prompt is sent; what
they "used" is a charge row written as `functions.budgets.charge` writes one."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from functions.db.budgets import BudgetCharges
from functions.db.engine import make_engine, session_factory, transaction
from tests.e2e.conftest import MODELS, make_bare_repo
from tests.support.control_plane import ControlPlane
from vwm import Client, NotFoundError, ValidationError
from vwm.local.clis import pinned_version
from vwm.sdk.sessions import VWSession

pytestmark = pytest.mark.xdist_group("sdk_live_control_plane")

Vwm = Callable[..., Result]

NO_WORKER_LIMITS = {
    "limits": {
        "tokens_per_day": None,
        "tokens_total": None,
        "usd_per_day": None,
        "usd_total": None,
    },
    "used": {"tokens_today": 0, "tokens_total": 0, "usd_today": 0, "usd_total": 0},
    "left": {"tokens_today": None, "tokens_total": None, "usd_today": None, "usd_total": None},
}
_names = itertools.count()


@pytest.fixture
def worker(live: Client, live_provider: Any, tmp_path: Path) -> str:
    """A new worker (a session keeps its worker from being deleted, so each test has its own)."""
    if "claude-fake" not in {r["name"] for r in live.admin.list_runtimes()}:
        live.admin.create_runtime(
            name="claude-fake",
            cli="claude",
            cli_version=pinned_version("claude"),
            default_model=MODELS["claude"],
            provider_base_url=live_provider.base_url,
            credential_ref="FAKE_PROVIDER_KEY",
        )
    name = f"budgeted-{next(_names)}"
    repo = make_bare_repo(tmp_path / "kb.git", {"README.md": "# knowledge\n"})
    live.admin.create_worker(name=name, runtime="claude-fake", repo_url=str(repo))
    return name


def start_session(live: Client, worker: str, **budget: int | float | None) -> VWSession:
    """Answered at once (202, still provisioning): budgets do not wait for a harness."""
    return live.worker(worker).session(wait=False, budget=budget or None)


def charge(live: Client, plane: ControlPlane, session: VWSession, tokens: int, usd: float) -> None:
    """What its meter's charge of one model call would have stored."""
    worker_id = live.admin.get_worker(str(session.worker))["id"]
    engine = make_engine(f"sqlite:///{plane.data_dir / 'vwm.sqlite3'}")
    try:
        with transaction(session_factory(engine)) as db:
            BudgetCharges(db).add(
                job_id=f"job_{session.id}_{next(_names)}",
                seq=0,
                session_id=session.id,
                worker_id=worker_id,
                tokens=tokens,
                usd=usd,
                charged_at=datetime.now(UTC),
            )
    finally:
        engine.dispose()


def refused_field(error: ValidationError) -> list[str]:
    return [problem["field"] for problem in (error.details or {})["errors"]]


# -- the SDK ----------------------------------------------------------------------------------


def test_a_worker_budget_is_set_read_changed_field_by_field_and_removed(
    live: Client, worker: str
) -> None:
    assert live.admin.worker_budget(worker) == NO_WORKER_LIMITS

    set_ = live.admin.set_worker_budget(worker, tokens_per_day=1000, usd_total=2.5)
    assert set_["limits"] == NO_WORKER_LIMITS["limits"] | {"tokens_per_day": 1000, "usd_total": 2.5}
    assert set_["left"] == NO_WORKER_LIMITS["left"] | {"tokens_today": 1000, "usd_total": 2.5}
    assert live.admin.worker_budget(worker) == set_

    more = live.admin.set_worker_budget(worker, tokens_total=5000)  # the others are kept
    assert more["limits"] == set_["limits"] | {"tokens_total": 5000}

    fewer = live.admin.set_worker_budget(worker, tokens_per_day=None)  # None removes one
    assert fewer["limits"] == more["limits"] | {"tokens_per_day": None}
    assert fewer["left"]["tokens_today"] is None
    assert live.admin.get_worker(worker)["budget"] == fewer  # the worker's view shows it too

    assert live.admin.set_worker_budget(worker, tokens_total=None, usd_total=None) == (
        NO_WORKER_LIMITS
    )


def test_a_negative_worker_limit_is_refused_naming_the_field_and_changes_nothing(
    live: Client, worker: str
) -> None:
    live.admin.set_worker_budget(worker, usd_per_day=1.0)
    with pytest.raises(ValidationError) as refused:
        live.admin.set_worker_budget(worker, tokens_total=10, usd_per_day=-0.5)
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    assert refused_field(refused.value) == ["usd_per_day"]
    assert live.admin.worker_budget(worker)["limits"]["usd_per_day"] == 1.0
    assert live.admin.worker_budget(worker)["limits"]["tokens_total"] is None

    with pytest.raises(ValidationError) as unknown_field:
        live.admin.set_worker_budget(worker, tokens=10)  # a session's limit, not a worker's
    assert refused_field(unknown_field.value) == ["tokens"]


def test_an_unknown_worker_has_no_budget(live: Client) -> None:
    for call in (
        lambda: live.admin.worker_budget("nobody"),
        lambda: live.admin.set_worker_budget("nobody", tokens_total=1),
    ):
        with pytest.raises(NotFoundError) as missing:
            call()
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        assert "nobody" in missing.value.message


def test_a_session_budget_is_set_at_start_changed_and_removed(live: Client, worker: str) -> None:
    session = start_session(live, worker, tokens=100)
    assert session.data["budget"]["limits"] == {"tokens": 100, "usd": None}
    assert session.data["budget"]["left"] == {"tokens": 100, "usd": None}
    assert session.data["budget"]["state"]["open"] is True

    changed = session.set_budget(usd=0.5)  # tokens kept
    assert changed["limits"] == {"tokens": 100, "usd": 0.5}
    assert session.data["budget"] == changed
    assert live.get_session(session.id).data["budget"] == changed

    removed = session.set_budget(tokens=None)
    assert removed["limits"] == {"tokens": None, "usd": 0.5}
    assert removed["state"] == {"open": True, "reason": None, "tokens_left": None, "usd_left": 0.5}

    unlimited = start_session(live, worker)  # no budget=: none is sent, none is set
    assert unlimited.data["budget"]["limits"] == {"tokens": None, "usd": None}


def test_a_negative_session_limit_and_an_unknown_session_are_refused(
    live: Client, worker: str
) -> None:
    with pytest.raises(ValidationError) as at_start:
        start_session(live, worker, tokens=-1)
    assert (at_start.value.status, at_start.value.code) == (422, "invalid_request")
    assert refused_field(at_start.value) == ["budget.tokens"]

    session = start_session(live, worker, usd=1.0)
    with pytest.raises(ValidationError) as later:
        session.set_budget(usd=-1)
    assert (later.value.code, refused_field(later.value)) == ("invalid_request", ["usd"])
    assert session.refresh().data["budget"]["limits"] == {"tokens": None, "usd": 1.0}

    with pytest.raises(NotFoundError):
        VWSession(live, {"id": "ses_nobody"}).set_budget(tokens=1)


def test_used_and_left_count_the_charges_of_the_worker_and_its_sessions(
    live: Client, live_plane: ControlPlane, worker: str
) -> None:
    live.admin.set_worker_budget(worker, tokens_per_day=1000, usd_total=1.0)
    first = start_session(live, worker, tokens=300)
    other = start_session(live, worker)
    charge(live, live_plane, first, tokens=200, usd=0.25)
    charge(live, live_plane, other, tokens=500, usd=0.5)

    budget = live.admin.worker_budget(worker)
    assert budget["used"] == {
        "tokens_today": 700,
        "tokens_total": 700,
        "usd_today": 0.75,
        "usd_total": 0.75,
    }
    assert budget["left"] == {
        "tokens_today": 300,
        "tokens_total": None,
        "usd_today": None,
        "usd_total": 0.25,
    }
    own = first.refresh().data["budget"]
    assert own["used"] == {"tokens": 200, "usd": 0.25}
    assert own["left"] == {"tokens": 100, "usd": None}
    # The meter is told the least left of all: the session's 100 tokens, the worker's $0.25.
    assert own["state"] == {"open": True, "reason": None, "tokens_left": 100, "usd_left": 0.25}

    charge(live, live_plane, first, tokens=100, usd=0.0)
    spent = first.refresh().data["budget"]["state"]
    assert spent["open"] is False
    assert spent["reason"] == (
        f"session {first.id}'s token budget (300) is spent: raise it with "
        f"PUT /v1/sessions/{first.id}/budget"
    )
    assert first.set_budget(tokens=400)["state"]["open"] is True  # raised: the next job may run


# -- the command line -------------------------------------------------------------------------


def test_vwm_worker_budget_shows_sets_and_removes_limits(live_vwm: Vwm, worker: str) -> None:
    shown = live_vwm("worker", "budget", worker)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == NO_WORKER_LIMITS

    set_ = live_vwm(
        "worker", "budget", worker, "--tokens-per-day", "1000", "--usd-total", "2.5",
        "--tokens-total", "50000",
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    limits = json.loads(set_.stdout)["limits"]
    assert limits == NO_WORKER_LIMITS["limits"] | {
        "tokens_per_day": 1000,
        "tokens_total": 50000,
        "usd_total": 2.5,
    }

    partly = live_vwm("worker", "budget", worker, "--usd-per-day", "0.75")
    assert json.loads(partly.stdout)["limits"] == limits | {"usd_per_day": 0.75}

    removed = live_vwm(
        "worker", "budget", worker, "--tokens-per-day", "none", "--usd-total", "NONE"
    )
    assert removed.exit_code == 0, removed.output
    expected = limits | {"usd_per_day": 0.75, "tokens_per_day": None, "usd_total": None}
    assert json.loads(removed.stdout)["limits"] == expected
    assert json.loads(live_vwm("worker", "budget", worker).stdout)["limits"] == expected


def test_vwm_worker_budget_refusals(live: Client, live_vwm: Vwm, worker: str) -> None:
    negative = live_vwm("worker", "budget", worker, "--tokens-per-day", "-5")
    assert (negative.exit_code, negative.stdout) == (1, "")
    first, details = negative.stderr.splitlines()
    assert first == "error [invalid_request]: the request is not valid"
    assert json.loads(details.removeprefix("  details: "))["errors"] == [
        {"field": "tokens_per_day", "problem": "Input should be greater than or equal to 0"}
    ]

    unknown = live_vwm("worker", "budget", "nobody")
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("error [not_found]: no worker 'nobody'")
    assert live_vwm("worker", "budget", "nobody", "--usd-total", "1").exit_code == 1

    # Not a number: a usage error before anything is sent (a whole number of tokens is never
    # truncated from 1.5).
    not_numbers = [
        ("--tokens-total", "lots"),
        ("--tokens-total", "1.5"),
        ("--usd-per-day", "nan"),
        ("--usd-total", ""),
    ]
    for option, value in not_numbers:
        bad = live_vwm("worker", "budget", worker, option, value)
        assert bad.exit_code == 2, (option, value, bad.output)
        assert option in bad.stderr and "Traceback" not in bad.output
    assert live.admin.worker_budget(worker) == NO_WORKER_LIMITS


def test_vwm_session_budget_and_session_get(
    live: Client, live_vwm: Vwm, live_plane: ControlPlane, worker: str
) -> None:
    session = start_session(live, worker, tokens=1000)
    charge(live, live_plane, session, tokens=250, usd=0.125)

    shown = live_vwm("session", "budget", session.id)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {
        "limits": {"tokens": 1000, "usd": None},
        "used": {"tokens": 250, "usd": 0.125},
        "left": {"tokens": 750, "usd": None},
        "state": {"open": True, "reason": None, "tokens_left": 750, "usd_left": None},
    }

    set_ = live_vwm("session", "budget", session.id, "--usd", "0.5")
    assert set_.exit_code == 0, set_.output
    assert json.loads(set_.stdout)["limits"] == {"tokens": 1000, "usd": 0.5}
    assert json.loads(set_.stdout)["left"] == {"tokens": 750, "usd": 0.375}

    removed = live_vwm("session", "budget", session.id, "--tokens", "none")
    assert json.loads(removed.stdout)["limits"] == {"tokens": None, "usd": 0.5}

    got = live_vwm("session", "get", session.id)
    assert got.exit_code == 0, got.output
    budget = json.loads(got.stdout)["budget"]
    assert budget["limits"] == {"tokens": None, "usd": 0.5}
    assert budget["used"] == {"tokens": 250, "usd": 0.125}
    assert budget["left"] == {"tokens": None, "usd": 0.375}


def test_vwm_session_budget_refusals(live: Client, live_vwm: Vwm, worker: str) -> None:
    session = start_session(live, worker, usd=1.0)
    negative = live_vwm("session", "budget", session.id, "--tokens", "-1")
    assert (negative.exit_code, negative.stdout) == (1, "")
    first, details = negative.stderr.splitlines()
    assert first == "error [invalid_request]: the request is not valid"
    assert [e["field"] for e in json.loads(details.removeprefix("  details: "))["errors"]] == [
        "tokens"
    ]

    bad = live_vwm("session", "budget", session.id, "--tokens", "2.5")
    assert bad.exit_code == 2 and "--tokens" in bad.stderr
    assert live.get_session(session.id).data["budget"]["limits"] == {"tokens": None, "usd": 1.0}

    unknown = live_vwm("session", "budget", "ses_nobody", "--usd", "1")
    assert (unknown.exit_code, unknown.stdout) == (1, "")
    assert unknown.stderr.startswith("error [not_found]: ")
    assert live_vwm("session", "budget", "ses_nobody").exit_code == 1
