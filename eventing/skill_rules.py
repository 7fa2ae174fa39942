"""What the harness and the control plane both say about a skill package without reading one:
the manifest's file name, the rule for a skill's name, and the bounds an archive is read within.

Kept apart from the readers (`eventing.skill_manifest`: YAML; `eventing.skill_entries`: tar and
zip) so that a harness, which checks a skill's name on every skill request but unpacks an
archive only when one is installed, starts without importing them (docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass

MANIFEST_NAME = "SKILL.md"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"
NAME_RULE = (
    "1 to 64 lowercase letters, digits and hyphens, not starting or ending with a hyphen "
    "(such as pdf-tools)"
)


@dataclass(frozen=True)
class ArchiveLimits:
    max_archive_bytes: int = 20 << 20  # the archive itself
    max_total_bytes: int = 100 << 20  # all files unpacked
    max_file_bytes: int = 50 << 20  # one file unpacked
    max_files: int = 2000  # entries (files + folders)
    max_ratio: int = 200  # unpacked / packed, the zip-bomb bound
    max_path_chars: int = 400  # one entry's normalized path
    max_depth: int = 32  # folders in one entry's path, the file's own name included
    # The ratio is judged only past this many unpacked bytes: a tiny package of repetitive
    # text may compress better than 200:1 and is no bomb.
    ratio_grace_bytes: int = 1 << 20
