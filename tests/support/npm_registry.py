"""A tiny npm registry on a loopback port, speaking npm's wire format, and a fake agent CLI to
publish on it: for tests that install a CLI with the real npm and no network.

``GET /<package>`` (a scoped name arrives as ``@scope%2fname``) answers the packument: the
package's versions, each with ``dist.tarball``, ``dist.shasum`` (SHA-1, hex) and
``dist.integrity`` (SHA-512, SRI). The tarball is a gzipped tar whose files sit under
``package/``. Anything else is 404, as the public registry answers an unknown package. Every
request path is recorded; clearing `tarballs_flow` keeps tarball answers back until it is set
again, so a test can catch an install in the middle.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

# A CLI that prints "<version> (Fake CLI)" to --version, and otherwise speaks just enough of
# Claude Code's stream-json (an init line, a result) for a job to succeed with the text
# "fake cli <version>", so a test sees which copy ran.
FAKE_CLI = f"""#!{sys.executable}
import json, sys
VERSION = "{{version}}"
if "--version" in sys.argv:
    print(f"{{{{VERSION}}}} (Fake CLI)")
    sys.exit(0)
def out(obj):
    print(json.dumps(obj), flush=True)
out({{{{"type": "system", "subtype": "init", "session_id": "fake", "model": "fake"}}}})
out({{{{"type": "result", "subtype": "success", "is_error": False, "session_id": "fake",
     "result": f"fake cli {{{{VERSION}}}}", "usage": {{{{"input_tokens": 1, "output_tokens": 1}}}}}}}})
"""

# Its package's install script leaves a mark, so a test sees whether npm ran it.
POSTINSTALL_MARK = "postinstall-ran"
_POSTINSTALL = f"node -e \"require('fs').writeFileSync('{POSTINSTALL_MARK}', '')\""


def fake_cli(version: str) -> str:
    return FAKE_CLI.format(version=version)


def package_tarball(name: str, version: str, bin_name: str) -> bytes:
    """The fake CLI as npm package `name`@`version`, its executable named `bin_name`."""
    manifest = {
        "name": name,
        "version": version,
        "bin": {bin_name: "cli.py"},
        "scripts": {"postinstall": _POSTINSTALL},
    }
    files = {
        "package/package.json": (json.dumps(manifest).encode(), 0o644),
        "package/cli.py": (fake_cli(version).encode(), 0o755),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class NpmRegistry:
    port: int
    packages: dict[str, dict[str, bytes]] = field(default_factory=dict)  # name -> version -> tgz
    requests: list[str] = field(default_factory=list)
    # Cleared: tarball answers wait until it is set again (at most a minute).
    tarballs_flow: threading.Event = field(default_factory=threading.Event)
    tarball_asked: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.tarballs_flow.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def publish(self, name: str, versions: list[str], bin_name: str) -> None:
        self.packages[name] = {v: package_tarball(name, v, bin_name) for v in versions}

    def tarball_requests(self) -> list[str]:
        return [path for path in self.requests if path.endswith(".tgz")]

    def packument(self, name: str) -> dict[str, object]:
        versions = {}
        for version, tgz in self.packages[name].items():
            manifest = json.loads(_member(tgz, "package/package.json"))
            integrity = base64.b64encode(hashlib.sha512(tgz).digest()).decode()
            versions[version] = {
                **manifest,
                "_id": f"{name}@{version}",
                "dist": {
                    "tarball": f"{self.url}{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz",
                    "shasum": hashlib.sha1(tgz).hexdigest(),  # npm's format: SHA-1, hex
                    "integrity": f"sha512-{integrity}",
                },
            }
        latest = sorted(versions, key=lambda v: [int(part) for part in v.split(".")])[-1]
        return {"name": name, "dist-tags": {"latest": latest}, "versions": versions}

    def answer(self, path: str) -> tuple[int, str, bytes]:
        path = unquote(path.split("?", 1)[0]).lstrip("/")
        if "/-/" in path:
            name, _, file_name = path.partition("/-/")
            for version, tgz in self.packages.get(name, {}).items():
                if file_name == f"{name.rsplit('/', 1)[-1]}-{version}.tgz":
                    self.tarball_asked.set()
                    self.tarballs_flow.wait(60)
                    return 200, "application/octet-stream", tgz
            return 404, "application/json", b'{"error":"not found"}'
        if path in self.packages:
            return 200, "application/json", json.dumps(self.packument(path)).encode()
        return 404, "application/json", b'{"error":"not found"}'


def _member(tgz: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as archive:
        member = archive.extractfile(path)
        assert member is not None
        return member.read()


@contextlib.contextmanager
def npm_registry() -> Iterator[NpmRegistry]:
    """Serve a registry (empty: publish packages on it) on a free loopback port."""
    registry: NpmRegistry

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            registry.requests.append(self.path)
            status, content_type, body = registry.answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    registry = NpmRegistry(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        registry.tarballs_flow.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
