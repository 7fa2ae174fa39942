"""`python -m harness.adapters CLI FILE`: print the normalized events of a recorded CLI stdout.

One JSON line per event (`{"kind", "data"}`), then one summary line (the `RunSummary` fields).
A failed run's transcript is data, not a failure: exit 0. Exit 2 for bad usage, 1 for a
malformed known event. For engineers checking an adapter against a new CLI version.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.adapters import ADAPTERS
from harness.adapters.base import AdapterParseError
from harness.adapters.transcript import read_objects, replay


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m harness.adapters", description=__doc__.splitlines()[0]
    )
    cli.add_argument("cli", choices=sorted(ADAPTERS), help="which CLI wrote the transcript")
    cli.add_argument("file", type=Path, help="its recorded stdout (.jsonl, or one .json document)")
    args = cli.parse_args(argv)
    if not args.file.is_file():
        cli.error(f"no such file: {args.file}")
    parser = ADAPTERS[args.cli].new_parser()
    try:
        # exit_code None: a transcript does not say how the process ended.
        events = replay(parser, read_objects(args.file), exit_code=None)
    except AdapterParseError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if "event" in exc.details:
            print(json.dumps(exc.details["event"], ensure_ascii=False)[:2000], file=sys.stderr)
        return 1
    out = sys.stdout
    for item in events:
        out.write(json.dumps({"kind": item.kind.value, "data": item.data}, ensure_ascii=False))
        out.write("\n")
    out.write(json.dumps(parser.summary.model_dump(mode="json"), ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
