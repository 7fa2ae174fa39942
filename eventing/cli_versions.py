"""Exact CLI versions: what a runtime may pin (the admin API's ``cli_version``) and what the
harness installs (``VWM_CLI_VERSION``, `harness.cli_install`).

Defined once, here, because both edges check it: the control plane refuses a runtime with any
other value (422), and the harness refuses to start with one, whatever the control plane let
through. An exact version is ``MAJOR.MINOR.PATCH`` with an optional ``-prerelease``
(``0.62.0-preview.1``), as npm publishes them. Not a range (``2``, ``^2.1.0``), not a dist-tag
(``latest``), not build metadata (``+abc``: npm ignores it, so the version the CLI reports would
never equal it). The alphabet leaves no room for what a path or a shell gives a meaning to
(``/``, ``..``, spaces, ``$``, quotes): the version names a folder on the volume and reaches npm's
command line.
"""

from __future__ import annotations

import re

MAX_VERSION_CHARS = 64

# Each CLI's package on npm: what a version is a version of (harness/clis/package.json pins
# them; the harness installs another version of one, `vwm` installs them for the demo).
NPM_PACKAGES = {
    "claude": "@anthropic-ai/claude-code",
    "codex": "@openai/codex",
    "gemini": "@google/gemini-cli",
    "opencode": "opencode-ai",
}

_NUMBER = "(?:0|[1-9][0-9]*)"
_IDENTIFIER = "[0-9A-Za-z-]+"
# For JSON Schema (the admin API's OpenAPI) and Python alike: ASCII classes only, no \d.
EXACT_VERSION_PATTERN = rf"^{_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-{_IDENTIFIER}(?:\.{_IDENTIFIER})*)?$"
_EXACT_VERSION = re.compile(EXACT_VERSION_PATTERN[1:-1])
# The first version-looking word of a ``--version`` answer ("2.1.197 (Claude Code)",
# "codex-cli 0.169.0", "v1.2.3").
_REPORTED = re.compile(
    rf"(?<![0-9.]){_NUMBER}\.{_NUMBER}\.{_NUMBER}(?:-{_IDENTIFIER}(?:\.{_IDENTIFIER})*)?"
)

EXACT_VERSION_RULE = (
    "an exact version such as 2.1.197 or 0.62.0-preview.1 (MAJOR.MINOR.PATCH, optionally "
    "-prerelease; no range, tag, build metadata, spaces, slashes or shell characters)"
)


def is_exact_version(value: str) -> bool:
    return len(value) <= MAX_VERSION_CHARS and _EXACT_VERSION.fullmatch(value) is not None


def reported_version(output: str) -> str | None:
    """The version a CLI's ``--version`` output names, or None if it names none."""
    found = _REPORTED.search(output)
    return found.group(0) if found else None
