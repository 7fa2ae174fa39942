"""`python -m harness`: serve the harness for one session workspace, configured from VWM_* variables
(`harness.serve`; docs/harness.md)."""

from __future__ import annotations

import gc
import sys


def main() -> int:
    # Paused through the imports and the start, resumed (what was made frozen) once the first
    # answer begins: the start allocates objects that all live, and the collections that scan
    # them again and again cost about a tenth of a cold start (eventing.start_gc).
    gc.disable()
    from harness.serve import serve

    return serve()


if __name__ == "__main__":
    sys.exit(main())
