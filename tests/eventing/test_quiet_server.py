"""`eventing.quiet_server.QuietServer`: an idle server wakes once a second rather than uvicorn's
ten times, still refreshes its Date header, and an exit asked by a signal is not left waiting
for the next wake."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx
import uvicorn

from eventing.quiet_server import QuietServer
from eventing.sockets import listening_tcp_socket

ROOT = Path(__file__).resolve().parents[2]


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


class Counted(QuietServer):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ticks = 0
        self.serving = asyncio.Event()

    async def startup(self, sockets=None):
        await super().startup(sockets)
        self.serving.set()

    async def on_tick(self, counter: int) -> bool:
        self.ticks += 1
        return await super().on_tick(counter)


async def started() -> tuple[Counted, asyncio.Task[None], str]:
    sock = listening_tcp_socket("127.0.0.1", 0)
    server = Counted(uvicorn.Config(hello, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(20):
        await server.serving.wait()
    host, port = sock.getsockname()[:2]
    return server, task, f"http://{host}:{port}/"


async def test_an_idle_server_wakes_once_a_second_and_answers_with_a_date():
    server, task, url = await started()
    try:
        before = server.ticks
        await asyncio.sleep(2.5)
        assert server.ticks - before <= 3  # uvicorn's own loop: about 25
        async with httpx.AsyncClient() as client:
            answer = await client.get(url)
        assert answer.text == "hi" and answer.headers["date"].endswith("GMT")
    finally:
        server.should_exit = True  # seen at the next wake (a signal would be re-raised here)
        await task


# A server that would sleep an hour between wakes; it says when it serves.
SLEEPY = """
import sys, uvicorn
from eventing import quiet_server
from eventing.sockets import listening_tcp_socket
quiet_server.TICK_S = 3600.0
async def app(scope, receive, send):
    pass
sock = listening_tcp_socket("127.0.0.1", 0)
server = quiet_server.QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off"))
config_started = server.startup
async def startup(sockets=None):
    await config_started(sockets)
    print("serving", flush=True)
server.startup = startup
server.run(sockets=[sock])
"""


async def test_a_signal_ends_the_wait_at_once():
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SLEEPY, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert await child.stdout.readline() == b"serving\n"
        await asyncio.sleep(0.2)  # in its hour-long wait
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):  # not an hour
            await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
