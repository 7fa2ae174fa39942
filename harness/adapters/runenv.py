"""Set-up helpers every adapter shares: the isolated home, config files, the prompt argument.

Called by the per-CLI adapter modules only. All CLI state lives under `RunSpec.home` (inside the
workspace volume), so a restarted harness finds the CLI's sessions again and resume keeps working.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.adapters.base import RunSpec

# One variable name for the configured provider's key, for CLIs whose config names a variable
# (codex `env_key`, opencode `{env:...}`): the key itself is never written to disk or argv.
PROVIDER_KEY_ENV = "VWM_PROVIDER_API_KEY"


def tmp_dir(spec: RunSpec) -> Path:
    return spec.home / "tmp"


def home_env(spec: RunSpec) -> dict[str, str]:
    """HOME and TMPDIR inside the CLI home: whatever a CLI writes "in the user's home" or in a
    temp file (gemini's error reports, claude's shell snapshots) stays in the workspace."""
    return {"HOME": str(spec.home), "TMPDIR": str(tmp_dir(spec))}


def make_dirs(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)


def write_if_changed(path: Path, content: str) -> bool:
    """Write `content` atomically unless the file already holds it; True if it was written.

    Unchanged files keep their mtime, so calling `write_config` before every run is cheap and
    never races a CLI that is reading its config.
    """
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)
    return True


def write_json_if_changed(path: Path, value: dict[str, Any]) -> bool:
    return write_if_changed(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def remove_if_present(path: Path) -> None:
    path.unlink(missing_ok=True)


def instructions_text(spec: RunSpec, *, with_system_prompt: bool = False) -> str | None:
    """The instruction file's text (plus the system prompt, for CLIs without a flag for one), or
    None when there is nothing to give the CLI."""
    parts: list[str] = []
    if spec.instruction_file.is_file():
        parts.append(spec.instruction_file.read_text(encoding="utf-8").rstrip("\n"))
    if with_system_prompt and spec.system_prompt:
        parts.append(spec.system_prompt.rstrip("\n"))
    return "\n\n".join(parts) + "\n" if parts else None


def sync_instructions(spec: RunSpec, target: Path, *, with_system_prompt: bool = False) -> None:
    """Copy the workspace's instruction file to the CLI's global instruction location.

    A copy rather than a symlink: it cannot dangle when the volume is mounted elsewhere, and
    `write_config` runs before every run, so it follows edits of the instruction file.
    """
    text = instructions_text(spec, with_system_prompt=with_system_prompt)
    if text is None:
        remove_if_present(target)
    else:
        write_if_changed(target, text)


def prompt_arg(prompt: str) -> str:
    """The prompt as a command-line argument that no CLI can mistake for a flag.

    A prompt that starts with "-" (a markdown list, say) would be parsed as options by all four
    argument parsers; a leading space keeps it positional and means nothing to the model.
    """
    return " " + prompt if prompt.startswith("-") else prompt


def toml_string(value: str) -> str:
    """`value` as a TOML basic string (JSON escapes are not all valid TOML: surrogates, DEL)."""
    out = ['"']
    for char in value:
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
