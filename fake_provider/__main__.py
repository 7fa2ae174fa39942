"""`python -m fake_provider --host 127.0.0.1 --port N`: serve the fake provider (foreground)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fake_provider.app import FakeProvider
from fake_provider.server import bind_socket, make_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_provider", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--dump-dir", type=Path, help="save every model request body here")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(name)s %(levelname)s %(message)s")
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    server = make_server(FakeProvider(dump_dir=args.dump_dir), log_level=args.log_level)
    print(f"fake provider listening on http://{host}:{port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
