"""How much the bubblewrap sandbox (harness/sandbox.py) adds to starting a CLI.

Two measures, interleaved so both sides see the same machine load, medians and 90th percentiles:
`true` bare against `true` inside the full profile (the pure cost of setting the sandbox up), and
a real CLI's run of one prompt against the project's fake provider, bare and sandboxed (argv, env
and config exactly as the harness builds them).

    python bench/sandbox_overhead.py [--runs 5] [--starts 50] [--cli claude --cli codex ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eventing.bwrap import probe as probe_bwrap  # noqa: E402
from fake_provider.testing import serve_in_thread  # noqa: E402
from harness import sandbox  # noqa: E402
from harness.adapters import get_adapter  # noqa: E402
from harness.adapters.base import ProviderConfig, RunSpec  # noqa: E402
from harness.jobs import cli_environment  # noqa: E402
from harness.settings import SandboxSettings  # noqa: E402
from tests.support.harness_process import CLI_BIN  # noqa: E402

MODELS = {
    "claude": "claude-sonnet-4-5",
    "codex": "gpt-fake",
    "gemini": "gemini-fake",
    "opencode": "fake-model",
}


def timed(argv: Sequence[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def summary(name: str, seconds: list[float]) -> str:
    p90 = statistics.quantiles(seconds, n=10)[-1] if len(seconds) >= 2 else seconds[0]
    return (
        f"{name:<28} median {statistics.median(seconds) * 1000:8.1f} ms   p90 {p90 * 1000:8.1f} ms"
    )


def bench_starts(settings: SandboxSettings, root: Path, starts: int) -> None:
    workspace = root / "sessions" / "bench" / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    true = shutil.which("true") or "/bin/true"
    wrapped = sandbox.command(settings, [true], workspace=workspace, cwd=workspace)
    bare, boxed = [], []
    for _ in range(starts):
        bare.append(timed([true]))
        boxed.append(timed(wrapped))
    print(summary("true", bare))
    print(summary("bwrap ... true", boxed))
    added = statistics.median(boxed) - statistics.median(bare)
    print(f"{'added per start':<28} median {added * 1000:8.1f} ms")


def cli_run(cli: str, base_url: str, root: Path, settings: SandboxSettings | None) -> float:
    """One prompt through the CLI in a workspace that persists between runs, like the harness's."""
    workspace = root / "sessions" / f"{cli}-{'sandboxed' if settings else 'bare'}" / "workspace"
    if not (workspace / "session_repo").exists():
        (workspace / "session_repo").mkdir(parents=True)
        subprocess.run(
            ["git", "init", "-q", "-b", "main"], cwd=workspace / "session_repo", check=True
        )
    adapter = get_adapter(cli)
    spec = RunSpec(
        prompt="say hello",
        workspace=workspace,
        cwd=workspace / "session_repo",
        home=workspace / ".cli-home",
        instruction_file=workspace / adapter.instruction_file_name,
        binary=str(CLI_BIN / cli),
        model=MODELS[cli],
        provider=ProviderConfig(base_url=base_url, api_key="bench-key"),
    )
    adapter.write_config(spec)
    invocation = adapter.invocation(spec)
    argv = invocation.argv
    if settings is not None:
        argv = sandbox.command(settings, argv, workspace=workspace, cwd=spec.cwd)
    env = cli_environment(invocation.env, vendor_keys=False)
    return timed(argv, cwd=spec.cwd, env=env, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="CLI runs per side")
    parser.add_argument("--starts", type=int, default=50, help="`true` starts per side")
    parser.add_argument("--cli", action="append", choices=sorted(MODELS))
    args = parser.parse_args()
    bwrap = shutil.which("bwrap") or "bwrap"
    if (problem := probe_bwrap(bwrap)) is not None:
        print(f"bubblewrap does not work here: {problem}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vwm-bench-sandbox-") as tmp:
        root = Path(tmp)
        settings = SandboxSettings(mode="bwrap", bwrap=bwrap, hide=(root,))
        print(f"bwrap: {bwrap}")
        bench_starts(settings, root, args.starts)
        with serve_in_thread() as provider:
            for cli in args.cli or ["claude"]:
                cli_run(cli, provider.base_url, root, None)  # first runs set the CLI home up
                cli_run(cli, provider.base_url, root, settings)
                bare, boxed = [], []
                for _ in range(args.runs):
                    bare.append(cli_run(cli, provider.base_url, root, None))
                    boxed.append(cli_run(cli, provider.base_url, root, settings))
                print(summary(f"{cli} bare", bare))
                print(summary(f"{cli} sandboxed", boxed))
                added = statistics.median(boxed) - statistics.median(bare)
                print(f"{'added per run':<28} median {added * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
