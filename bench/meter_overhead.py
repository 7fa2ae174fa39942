"""What the meter (harness/meter: the loopback proxy between a CLI and its provider) adds to a
model call.

Four processes, as in a session: the fake provider (this script with `--serve-provider`:
`python -m fake_provider`'s app and server, see `serve_provider`), a meter pointed at it (this
script with `--serve-meter`: a `Meter` with a job open, on an event loop of its own like the
harness's, otherwise idle during a job), a bare relay pointed at it (`--serve-relay`: bytes
passed on as they come, nothing parsed: what any extra process in the path costs on this
machine, the floor under the meter's figure) and this process in the CLI's place, with one
keep-alive HTTP client. For each wire API, streamed and not, the same request goes straight to
the provider, through the relay and through the meter, in rotating order (so drift and warm
caches hit each alike), after a warm-up. Per call: the latency to the last byte and the time to
the first body chunk (the first SSE event when streamed); p50 and p99 of each path, what the
meter and the relay add, and the meter process's CPU per call.

The `+context` rows send the streamed request a CLI sends in a real session: the same prompt
with `--context-kb` of tool definitions (Claude Code's first request carries about 60 KB).

Then streaming must not be buffered: a `sleep 1` prompt (tools offered, so the fake provider
spreads the answer over a second, first chunk at once) per API, direct and metered: the first
chunk must arrive at once through the meter too.

    python bench/meter_overhead.py [--calls 300] [--warmup 20] [--context-kb 96] [--json]
    python bench/meter_overhead.py --profile meter.prof   # cProfile the meter process
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fake_provider.samples import API_NAMES, key_headers, sample_call  # noqa: E402

REAL_KEY = "bench-real-key"
_TICKS = os.sysconf("SC_CLK_TCK")
# The fake provider keeps every call in its ledger and finds a call's entry again by a scan from
# the first one: emptied every so many calls, so that its answers do not slow down as a run goes
# on (the later APIs' rows would otherwise start from a slower provider).
RESET_EVERY = 25


# -- the requests, as each CLI's client sends them (fake_provider.samples) ----------------------

APIS = API_NAMES


# -- the processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    url: str
    key: str


def spawn(what: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """This script again, with `args` (`--serve-…`): the process and the JSON line it prints
    once it listens. It stops when its standard input closes (`stop`)."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.kill()
        raise RuntimeError(f"the {what} did not start")
    started: dict[str, str] = json.loads(line)
    return process, started


def start_provider() -> tuple[subprocess.Popen[str], str]:
    process, started = spawn("fake provider", "--serve-provider")
    return process, started["url"]


def serve_provider() -> None:
    """The fake provider (`python -m fake_provider`'s app and server) on a socket made with
    TCP's protocol number: asyncio sets TCP_NODELAY only on connections accepted from such a
    socket, and `fake_provider.server.bind_socket`'s (protocol 0) gets none, so its answers
    wait up to 40 ms on Nagle and delayed ACKs, as no real provider's do."""
    from fake_provider.app import FakeProvider
    from fake_provider.server import make_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = make_server(FakeProvider())

    def stop_at_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_at_eof, daemon=True).start()
    # Listening already: a client that comes before the server runs waits in the backlog.
    print(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}"}), flush=True)
    server.run(sockets=[sock])


def start_relay(provider_url: str) -> tuple[subprocess.Popen[str], Route]:
    process, started = spawn("relay", "--serve-relay", provider_url)
    return process, Route("relay", started["url"], REAL_KEY)


class _RelayUp(asyncio.Protocol):
    def __init__(self, down: asyncio.Transport) -> None:
        self.down = down

    def data_received(self, data: bytes) -> None:
        self.down.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.close()


class _RelayDown(asyncio.Protocol):
    """One CLI connection, passed byte for byte to a connection of its own to the provider."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.up: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.down = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_connection(lambda: _RelayUp(self.down), self.host, self.port)
        self.up = up  # type: ignore[assignment]
        for data in self.early:
            up.write(data)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.up is None:
            self.early.append(data)
        else:
            self.up.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None:
            self.up.close()


def serve_relay(provider_url: str) -> None:
    """The bare relay: what any process between the CLI and the provider costs, nothing read."""
    host, port = provider_url.removeprefix("http://").rsplit(":", 1)

    async def serve() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _RelayDown(host, int(port)), sock=sock)
        print(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}"}), flush=True)
        await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF
        server.close()

    asyncio.run(serve())


def start_meter(
    provider_url: str, profile: Path | None
) -> tuple[subprocess.Popen[str], Route, dict[str, str]]:
    args = ["--serve-meter", provider_url]
    if profile is not None:
        args += ["--profile", str(profile)]
    process, started = spawn("meter", *args)
    route = Route("metered", started.pop("url"), started.pop("key"))
    return process, route, started


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()  # the cue to stop (and for the meter to write its profile)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve_meter(provider_url: str, profile: Path | None) -> None:
    """The meter process: a `Meter` with a job open (so every call is metered and logged as in a
    job), until standard input closes."""
    from harness.adapters.base import ProviderConfig
    from harness.meter.service import Meter
    from harness.meter.wire import WireApi

    async def serve() -> None:
        meter = Meter(
            ProviderConfig(base_url=provider_url, api_key=REAL_KEY),
            {},
            api=WireApi.ANTHROPIC,
            connect_timeout_s=5.0,
        )
        await meter.start()
        calls: list[Any] = []
        meter.ledger.open("bench-job", on_call=calls.append, on_stop=lambda: None)
        started = {"url": meter.url, "key": meter.provider_for_cli().api_key, **stack()}
        print(json.dumps(started), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF
        await meter.close()

    # The event loop the harness runs on: uvicorn.run's ("auto": uvloop when installed).
    loop_factory = uvicorn.Config(app="unused:app").get_loop_factory()  # the app is never loaded
    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        profiler.enable()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))


def stack() -> dict[str, str]:
    """What the meter process runs on: its event loop, HTTP parser, and whether httpcore finds
    sniffio (without it, httpcore tries to import it on every lock and cancel shield)."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    sniffio = "yes" if importlib.util.find_spec("sniffio") else "no"
    return {"loop": loop, "parser": parser, "sniffio": sniffio}


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


# -- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    first_s: float  # to the first body chunk
    total_s: float  # to the last byte
    chunks: int


def cli_client() -> httpx.Client:
    """One keep-alive client, as a CLI holds. With TCP_NODELAY, as Node's and reqwest's
    clients set it by default (httpx's sync client does not, and its request goes out as two
    writes: headers, then body)."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(timeout=30, trust_env=False, transport=transport)


def with_context(api: str, body: dict[str, Any], kb: int) -> dict[str, Any]:
    """`body` with about `kb` KiB more of tool definitions, as a CLI's own tools make it."""
    if kb <= 0:
        return body
    [tool] = body["tools"]
    tools = []
    for n in range(max(1, kb // 2)):
        copy = json.loads(json.dumps(tool))
        declared = (
            copy["function"]
            if api == "openai_chat"
            else copy["functionDeclarations"][0]
            if api == "gemini"
            else copy
        )
        declared["name"] = f"tool_{n}"
        declared["description"] = f"Tool {n}: " + "reads, edits and runs what it is told. " * 48
        tools.append(copy)
    return {**body, "tools": [tool, *tools]}


def one_call(
    client: httpx.Client,
    route: Route,
    api: str,
    prompt: str,
    stream: bool,
    context_kb: int = 0,
) -> Timing:
    # A Chat stream asks for its usage itself, as OpenCode does: the meter would add it.
    path, body = sample_call(api, prompt, stream=stream, ask_usage=True)
    body = with_context(api, body, context_kb)
    headers = {"content-type": "application/json", **key_headers(api, route.key)}
    content = json.dumps(body).encode()
    first: float | None = None
    chunks = 0
    started = time.perf_counter()
    with client.stream("POST", route.url + path, content=content, headers=headers) as answer:
        for _ in answer.iter_raw():
            if first is None:
                first = time.perf_counter()
            chunks += 1
        ended = time.perf_counter()
    if answer.status_code != 200:
        raise RuntimeError(f"{route.name} {api}: HTTP {answer.status_code}")
    return Timing((first or ended) - started, ended - started, chunks)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Row:
    api: str
    mode: str
    calls: int
    direct_p50_ms: float
    direct_p99_ms: float
    metered_p50_ms: float
    metered_p99_ms: float
    added_p50_ms: float
    added_p99_ms: float
    relay_added_p50_ms: float
    """What the bare relay adds: any extra process in the path, nothing read."""
    first_direct_p50_ms: float
    first_metered_p50_ms: float
    meter_cpu_per_call_ms: float


def compare(
    client: httpx.Client,
    direct: Route,
    relay: Route,
    metered: Route,
    meter_pid: int,
    api: str,
    stream: bool,
    calls: int,
    warmup: int,
    context_kb: int = 0,
) -> Row:
    routes = (direct, relay, metered)
    for i in range(warmup):
        one_call(client, routes[i % 3], api, "say hi", stream, context_kb)
    timings: dict[str, list[Timing]] = {route.name: [] for route in routes}
    cpu_before = cpu_s(meter_pid)
    for i in range(calls):
        if i % RESET_EVERY == 0:
            client.post(direct.url + "/_fake/reset").raise_for_status()
        # Rotated: each path goes first, second and third as often as the others.
        for route in routes[i % 3 :] + routes[: i % 3]:
            timings[route.name].append(one_call(client, route, api, "say hi", stream, context_kb))
    meter_cpu = (cpu_s(meter_pid) - cpu_before) / calls

    def ms(route: Route, q: float, first: bool = False) -> float:
        values = [t.first_s if first else t.total_s for t in timings[route.name]]
        return round(pct(values, q) * 1000, 3)

    return Row(
        api=api,
        mode=("streamed" if stream else "whole") + ("+context" if context_kb else ""),
        calls=calls,
        direct_p50_ms=ms(direct, 0.5),
        direct_p99_ms=ms(direct, 0.99),
        metered_p50_ms=ms(metered, 0.5),
        metered_p99_ms=ms(metered, 0.99),
        added_p50_ms=round(ms(metered, 0.5) - ms(direct, 0.5), 3),
        added_p99_ms=round(ms(metered, 0.99) - ms(direct, 0.99), 3),
        relay_added_p50_ms=round(ms(relay, 0.5) - ms(direct, 0.5), 3),
        first_direct_p50_ms=ms(direct, 0.5, first=True),
        first_metered_p50_ms=ms(metered, 0.5, first=True),
        meter_cpu_per_call_ms=round(meter_cpu * 1000, 3),
    )


@dataclass(frozen=True)
class SlowStream:
    api: str
    direct_first_ms: float
    direct_total_ms: float
    direct_chunks: int
    metered_first_ms: float
    metered_total_ms: float
    metered_chunks: int


def slow_stream(client: httpx.Client, direct: Route, metered: Route, api: str) -> SlowStream:
    """A `sleep 1` answer: spread over a second, its first chunk at once."""
    there = one_call(client, direct, api, "sleep 1", True)
    through = one_call(client, metered, api, "sleep 1", True)
    return SlowStream(
        api,
        round(there.first_s * 1000, 1),
        round(there.total_s * 1000, 1),
        there.chunks,
        round(through.first_s * 1000, 1),
        round(through.total_s * 1000, 1),
        through.chunks,
    )


# -- reporting ----------------------------------------------------------------------------------


def print_rows(rows: list[Row]) -> None:
    header = (
        f"{'API':<17} {'mode':<16} {'direct p50/p99':>16} {'metered p50/p99':>16} "
        f"{'added p50/p99':>15} {'relay adds p50':>15} {'first chunk p50 d/m':>20} "
        f"{'meter CPU/call':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.api:<17} {r.mode:<16} "
            f"{r.direct_p50_ms:>7.2f}/{r.direct_p99_ms:<8.2f}"
            f"{r.metered_p50_ms:>7.2f}/{r.metered_p99_ms:<8.2f}"
            f"{r.added_p50_ms:>+7.2f}/{r.added_p99_ms:<+7.2f}"
            f"{r.relay_added_p50_ms:>+13.2f}  "
            f"{r.first_direct_p50_ms:>10.2f}/{r.first_metered_p50_ms:<9.2f}"
            f"{r.meter_cpu_per_call_ms:>10.2f}"
        )


def print_slow(slow: list[SlowStream]) -> None:
    print("\n`sleep 1` streamed (first chunk at once, the rest over a second), in ms:")
    print(f"{'API':<17} {'direct first/total (chunks)':>30} {'metered first/total (chunks)':>30}")
    for s in slow:
        print(
            f"{s.api:<17} {s.direct_first_ms:>12.1f}/{s.direct_total_ms:<8.1f}({s.direct_chunks:>3}) "
            f"{s.metered_first_ms:>17.1f}/{s.metered_total_ms:<8.1f}({s.metered_chunks:>3})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="measured calls per API, mode, side")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls first, per API")
    parser.add_argument(
        "--context-kb", type=int, default=96, help="tool definitions added in the +context rows"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--profile", type=Path, help="cProfile the meter process into this file")
    parser.add_argument("--serve-meter", metavar="PROVIDER_URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-provider", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", metavar="PROVIDER_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_provider:
        serve_provider()
        return
    if args.serve_meter:
        serve_meter(args.serve_meter, args.profile)
        return
    if args.serve_relay:
        serve_relay(args.serve_relay)
        return

    provider, provider_url = start_provider()
    try:
        meter, metered, meter_stack = start_meter(provider_url, args.profile)
        relay_process, relay = start_relay(provider_url)
        try:
            direct = Route("direct", provider_url, REAL_KEY)
            modes = [(True, 0), (False, 0), (True, args.context_kb)]
            with cli_client() as client:
                rows = [
                    compare(
                        client,
                        direct,
                        relay,
                        metered,
                        meter.pid,
                        api,
                        stream,
                        args.calls,
                        args.warmup,
                        context_kb,
                    )
                    for stream, context_kb in modes
                    for api in APIS
                ]
                slow = [slow_stream(client, direct, metered, api) for api in APIS]
        finally:
            stop(relay_process)
            stop(meter)
    finally:
        stop(provider)

    if args.json:
        figures = {
            "calls": args.calls,
            "warmup": args.warmup,
            "context_kb": args.context_kb,
            "meter": meter_stack,
            "rows": [asdict(r) for r in rows],
            "sleep_1": [asdict(s) for s in slow],
        }
        print(json.dumps(figures))
        return
    print(f"{args.calls} calls per API, mode and side after {args.warmup} warm-up; times in ms")
    print("meter process: " + ", ".join(f"{k} {v}" for k, v in meter_stack.items()))
    print(
        "(added = metered - direct, per percentile; relay adds = bare relay - direct, the floor "
        "of any extra hop;\n first chunk = first body chunk; +context = "
        f"{args.context_kb} KiB more of tool definitions in the request)\n"
    )
    print_rows(rows)
    print_slow(slow)
    if args.profile:
        print(f"\nthe meter's profile: {args.profile} (python -m pstats)")


if __name__ == "__main__":
    main()
