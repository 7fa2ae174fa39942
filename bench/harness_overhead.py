"""How much the harness adds to a CLI run.

For each CLI, against the project's fake provider: time the bare CLI (same argv, env and config the
harness would use) and the same prompt through the harness API (sync mode), interleaved, several
runs each; print the median of each, their ratio, and the stream's first-byte latency (POST with
mode=stream until the first SSE byte, and until the CLI's first event).

    python bench/harness_overhead.py [--runs 5] [--cli claude --cli codex ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fake_provider.testing import serve_in_thread  # noqa: E402
from harness.adapters import get_adapter  # noqa: E402
from harness.adapters.base import ProviderConfig, RunSpec  # noqa: E402
from harness.jobs import cli_environment  # noqa: E402
from tests.support.harness_process import CLI_BIN, HarnessProcess  # noqa: E402

MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-fake",
    "gemini": "gemini-fake",
    "opencode": "fake-model",
}
PROMPT = "say hello"
KEY = "bench-key"


def bare_run(cli: str, base_url: str, root: Path) -> float:
    """One run of the bare CLI in a workspace of its own that, like the harness's, persists
    between runs (a fresh CLI home each time would time the CLI's first-start work instead)."""
    workspace = root / f"bare-{cli}"
    if not (workspace / "session_repo").exists():
        (workspace / "session_repo").mkdir(parents=True)
        subprocess.run(
            ["git", "init", "-q", "-b", "main"], cwd=workspace / "session_repo", check=True
        )
    adapter = get_adapter(cli)
    spec = RunSpec(
        prompt=PROMPT,
        workspace=workspace,
        cwd=workspace / "session_repo",
        home=workspace / ".cli-home",
        instruction_file=workspace / adapter.instruction_file_name,
        binary=str(CLI_BIN / cli),
        model=MODELS[cli],
        provider=ProviderConfig(base_url=base_url, api_key=KEY),
    )
    adapter.write_config(spec)
    invocation = adapter.invocation(spec)
    env = cli_environment(invocation.env, vendor_keys=False)  # exactly what the harness passes
    started = time.perf_counter()
    # Output read through pipes, as any caller that wants the answer must (the harness too).
    subprocess.run(
        invocation.argv,
        cwd=spec.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return time.perf_counter() - started


def harness_run(client: httpx.Client) -> float:
    started = time.perf_counter()
    job = client.post("/v1/jobs", json={"prompt": PROMPT, "new_session": True}).json()
    elapsed = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"harness job failed: {job}")
    return elapsed


def first_bytes(client: httpx.Client) -> tuple[float, float]:
    """Seconds to the first SSE byte, and to the first event that came from the CLI."""
    started = time.perf_counter()
    first_byte = first_cli_event = None
    with client.stream(
        "POST", "/v1/jobs", json={"prompt": PROMPT, "mode": "stream", "new_session": True}
    ) as response:
        for line in response.iter_lines():
            now = time.perf_counter() - started
            first_byte = first_byte or now
            if line.startswith("event:") and "job_started" not in line and first_cli_event is None:
                first_cli_event = now
    return first_byte or float("nan"), first_cli_event or float("nan")


def bench_cli(cli: str, runs: int, base_url: str, root: Path) -> dict[str, float]:
    env = {"VWM_PROVIDER_BASE_URL": base_url, "VWM_PROVIDER_API_KEY": KEY}
    if MODELS[cli]:
        env["VWM_MODEL"] = MODELS[cli]
    harness = HarnessProcess(root / f"ws-{cli}", cli, env, root / f"{cli}.log")
    harness.start()
    try:
        with harness.client() as client:
            client.post("/v1/bootstrap", json={}).raise_for_status()
            bare_run(cli, base_url, root)  # warm the disk cache for both sides
            harness_run(client)
            bare, through = [], []
            for index in range(runs):
                print(f"  {cli}: run {index + 1}/{runs}", file=sys.stderr, flush=True)
                bare.append(bare_run(cli, base_url, root))
                through.append(harness_run(client))
            latencies = [first_bytes(client) for _ in range(3)]
    finally:
        harness.stop()
    return {
        "bare_median_s": statistics.median(bare),
        "harness_median_s": statistics.median(through),
        "ratio": statistics.median(through) / statistics.median(bare),
        "first_byte_ms": statistics.median(lat[0] for lat in latencies) * 1000,
        "first_cli_event_ms": statistics.median(lat[1] for lat in latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli", action="append", choices=sorted(MODELS))
    args = parser.parse_args()
    clis = args.cli or list(MODELS)
    print(
        f"{'cli':<9} {'bare p50':>9} {'harness p50':>12} {'ratio':>7} {'first byte':>11} "
        f"{'first CLI event':>16}"
    )
    with serve_in_thread() as provider, tempfile.TemporaryDirectory() as tmp:
        for cli in clis:
            row = bench_cli(cli, args.runs, provider.base_url, Path(tmp))
            print(
                f"{cli:<9} {row['bare_median_s']:>8.2f}s {row['harness_median_s']:>11.2f}s "
                f"{row['ratio']:>7.3f} {row['first_byte_ms']:>9.1f}ms "
                f"{row['first_cli_event_ms']:>14.1f}ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
