"""Semantic version precedence, against the examples of semver.org section 11."""

from __future__ import annotations

import pytest

from eventing.semver import highest, is_semver, precedence_key

ORDERED = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0",
]


def test_the_specification_order() -> None:
    shuffled = list(reversed(ORDERED))
    assert sorted(shuffled, key=precedence_key) == ORDERED


def test_build_metadata_does_not_count() -> None:
    assert precedence_key("1.2.3+build.7") == precedence_key("1.2.3")


def test_highest_is_by_precedence_not_by_text() -> None:
    assert highest(["1.9.0", "1.10.0", "1.2.0"]) == "1.10.0"
    assert highest(["2.0.0-rc.1", "1.99.0"]) == "2.0.0-rc.1"
    assert highest([]) is None


@pytest.mark.parametrize("bad", ["1", "1.2", "01.2.3", "1.2.3-", "v1.2.3", "1.2.3 ", "latest"])
def test_what_is_not_a_semantic_version(bad: str) -> None:
    assert not is_semver(bad)
    with pytest.raises(ValueError, match="not a semantic version"):
        precedence_key(bad)
