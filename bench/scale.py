"""VWM's own cost at scale: N sessions each streaming a prompt at once, on the embedded system
(`vwm up`), with the stand-in CLI (bench/standin_cli.py) so that what is measured is VWM's, not a
model's or a CLI's. For each database and each N it prints:

- session create → ready, p50 / p99 (sessions made 8 at a time before the load);
- first byte and whole stream of the N streamed prompts, p50 / p99;
- errors (a stream that did not end with a succeeded job) and gaps (a stream whose event ids
  were not 1, 2, 3, ... without a hole);
- GET /v1/sessions/{id} during the load, p50 / p99 (one call every 200 ms);
- CPU per prompt, by process: the control plane and the harnesses (read from /proc before and
  after the load), the stand-in CLI (as its runs log it), and this process (the streams'
  clients and the model stand-in, which share the two cores with VWM);
- the memory (RSS) the N idle harnesses hold before the load.

    python bench/scale.py [--sessions 50 100 200] [--database sqlite postgresql]
                          [--cli claude] [--case tool] [--pace 1.0]

PostgreSQL is the server the tests use (127.0.0.1:5432, trust auth); each run gets a fresh
database. Expect about a minute per 100 sessions on two cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import re
import resource
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from bench.standin_cli import cpu_seconds as standin_cpu  # noqa: E402
from bench.standin_cli import standin_env  # noqa: E402
from fake_provider.testing import serve_in_thread  # noqa: E402
from tests.e2e.conftest import MODELS, make_bare_repo  # noqa: E402
from tests.support.control_plane import ControlPlane, harness_pids, kill_harnesses  # noqa: E402
from tests.support.postgres import postgres_database  # noqa: E402
from vwm.local.clis import pinned_version  # noqa: E402

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SSE_ID = re.compile(r"^id: ?(\d+)\s*$")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1000:.0f} / {pct(values, 0.99) * 1000:.0f} ms"


def cpu_seconds(pid: int) -> float:
    """The CPU a process has used so far (user and system), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the command: state is field 3, utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def database(kind: str) -> Iterator[dict[str, str]]:
    if kind == "sqlite":
        yield {}
    else:
        with postgres_database("vwm_bench") as url:
            yield {"VWM_DATABASE_URL": url}


@contextlib.contextmanager
def bench_plane(
    root: Path, env: dict[str, str], *, case: str, pace_s: float
) -> Iterator[ControlPlane]:
    """`vwm up` on a data folder in `root`, its CLIs the stand-in (`standin_env`) and `env` on
    top; stopped, and every harness it left killed, at the end."""
    standins = standin_env(root / "standin", case=case, pace_s=pace_s)
    plane = ControlPlane(root / "data", {"BENCH_KEY": "bench-key", **standins, **env})
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()
        kill_harnesses(plane.data_dir)


def setup(client: httpx.Client, cli: str, provider_url: str, root: Path) -> Path:
    worker_repo = make_bare_repo(root / "worker.git", {"README.md": "# knowledge\n"})
    runtime = {
        "name": "bench",
        "cli": cli,
        "cli_version": pinned_version(cli),
        "default_model": MODELS[cli],
        "provider_base_url": provider_url,
        "credential_ref": "BENCH_KEY",
    }
    client.post("/v1/admin/runtimes", json=runtime).raise_for_status()
    worker = {"name": "bench", "runtime": "bench", "repo_url": str(worker_repo)}
    client.post("/v1/admin/workers", json=worker).raise_for_status()
    return make_bare_repo(root / "task.git", {"README.md": "# task\n"})


def create_sessions(
    client: httpx.Client, task_repo: Path, count: int
) -> tuple[list[str], list[float]]:
    def create(_: int) -> tuple[str, float]:
        started = time.perf_counter()
        made = client.post(
            "/v1/sessions", json={"worker": "bench", "session_repo": {"url": str(task_repo)}}
        )
        made.raise_for_status()
        return made.json()["id"], time.perf_counter() - started

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(create, range(count)))
    return [session_id for session_id, _ in made], [took for _, took in made]


PROBLEM = re.compile(r'"level": ?"(warning|error|critical)"|Traceback', re.IGNORECASE)


@dataclass
class Stream:
    first_byte: float
    total: float
    ok: bool
    gap: bool
    why: str = ""  # what a failed stream ended with: its status and last line, or the exception


def stream_prompt(
    base_url: str,
    headers: dict[str, str],
    session_id: str,
    tls: ssl.SSLContext | None = None,
) -> Stream:
    started = time.perf_counter()
    first = None
    ok = False
    ids: list[int] = []
    last = ""
    try:
        with (
            httpx.Client(
                base_url=base_url, headers=headers, timeout=600, verify=tls or True
            ) as own,
            own.stream(
                "POST",
                "/v1/prompts",
                json={"session_id": session_id, "prompt": "say hi", "mode": "stream"},
            ) as response,
        ):
            for line in response.iter_lines():
                first = first or time.perf_counter() - started
                last = line or last
                if found := SSE_ID.match(line):
                    ids.append(int(found.group(1)))
                ok = ok or ("job_finished" in line and '"status":"succeeded"' in line)
            ok = ok and response.status_code == 200
            why = (
                f"{session_id}: HTTP {response.status_code} after {time.perf_counter() - started:.1f} s, "
                f"{len(ids)} events, last line {last[:300]!r}"
            )
    except httpx.HTTPError as exc:
        ok, why = False, f"{session_id}: {type(exc).__name__}: {exc}"
    gap = ids != list(range(1, len(ids) + 1))
    return Stream(first or float("nan"), time.perf_counter() - started, ok, gap, "" if ok else why)


def run_load(plane: ControlPlane, client: httpx.Client, ids: list[str]) -> None:
    harnesses = harness_pids(plane.data_dir)
    assert plane.proc is not None
    idle_rss = sum(rss_bytes(pid) for pid in harnesses)
    before = {pid: cpu_seconds(pid) for pid in [plane.proc.pid, *harnesses]}
    cli_before = standin_cpu(plane.data_dir)

    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            client.get(f"/v1/sessions/{ids[0]}").raise_for_status()
            latencies.append(time.perf_counter() - started)
            done.wait(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    # A client per stream, as separate consumers have, but one TLS context for all: a client
    # makes its own otherwise (tens of ms of CPU loading the CA bundle), spent on the same two
    # cores as VWM just as the prompts start. (One client for every stream was slower still:
    # first byte p50 14.6 s against 7.0 s at 200 sessions, its pool shared by 200 threads.)
    tls = ssl.create_default_context()
    base_url, headers = str(client.base_url), dict(client.headers)
    generator_before = own_cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(ids)) as pool:
        streams = list(pool.map(lambda sid: stream_prompt(base_url, headers, sid, tls), ids))
    done.set()
    prober.join()
    generator = own_cpu_seconds() - generator_before

    spent = {pid: cpu_seconds(pid) - before[pid] for pid in before}
    count = len(ids)
    control_plane = spent[plane.proc.pid]
    harness_own = sum(spent[pid] for pid in harnesses)
    cli = standin_cpu(plane.data_dir) - cli_before
    firsts = [s.first_byte for s in streams]
    totals = [s.total for s in streams]
    print(
        f"  {count} streamed at once: errors {sum(not s.ok for s in streams)}, gaps "
        f"{sum(s.gap for s in streams)}; first byte p50/p99 {ms(firsts)}; whole stream "
        f"p50/p99 {ms(totals)}; GET a session p50/p99 {ms(latencies)} ({len(latencies)} calls)",
        flush=True,
    )
    for failed in [s for s in streams if not s.ok][:3]:
        print(f"    failed: {failed.why}", flush=True)
    if any(not s.ok for s in streams):
        problems = [line for line in plane.log().splitlines() if PROBLEM.search(line)]
        print(f"    the control plane logged {len(problems)} warnings and errors; the first:")
        for line in problems[:8]:
            print(f"      {line[:400]}", flush=True)
        failed_session = next(s.why for s in streams if not s.ok).split(":")[0]
        for line in [line for line in plane.log().splitlines() if failed_session in line][-12:]:
            print(f"      {line[:400]}", flush=True)
    print(
        f"  CPU per prompt: control plane {control_plane / count * 1000:.0f} ms, harness "
        f"{harness_own / count * 1000:.0f} ms, stand-in CLI {cli / count * 1000:.0f} ms, this "
        f"process (the streams' client, the model stand-in) {generator / count * 1000:.0f} ms; "
        f"idle harnesses held {idle_rss / 2**20:.0f} MiB RSS "
        f"({idle_rss / max(1, len(harnesses)) / 2**20:.0f} MiB each)",
        flush=True,
    )


def one_run(kind: str, count: int, args: argparse.Namespace, provider_url: str) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        database(kind) as db_env,
        bench_plane(Path(tmp), db_env, case=args.case, pace_s=args.pace) as plane,
        plane.client(timeout=600) as client,
    ):
        task_repo = setup(client, args.cli, provider_url, Path(tmp))
        ids, ready = create_sessions(client, task_repo, count)
        print(f"{kind}, {count} sessions: create → ready p50/p99 {ms(ready)}", flush=True)
        run_load(plane, client, ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument(
        "--database", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument("--cli", default="claude", choices=sorted(MODELS))
    parser.add_argument("--case", default="tool", choices=["text", "tool"])
    parser.add_argument("--pace", type=float, default=1.0, help="seconds each stand-in run takes")
    args = parser.parse_args()
    print(describe(), flush=True)
    os.environ["BENCH_KEY"] = "bench-key"
    with serve_in_thread() as provider:
        for kind in args.database:
            for count in args.sessions:
                one_run(kind, count, args, provider.base_url)


if __name__ == "__main__":
    main()
