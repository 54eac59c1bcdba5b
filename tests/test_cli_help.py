"""``bivio --help`` people can read, and the README's flag tables from the same groups.

Every option has a group (:data:`bivio.core.config.GROUPS`); ``--help`` shows one
argparse group per entry, in that order, and the README's "Flags" section has one
table per group, under a ``####`` heading of the same title, in the same order,
with the same flags in the same order. A help line breaks only between words:
never inside a flag's name or inside a ``[default: ...]`` / ``[env: ...]`` tag.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bivio.cli import OTHER_GROUP, build_parser, help_text
from bivio.core.config import GROUPS, OPTIONS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def options_by_group() -> list[tuple[str, list[str]]]:
    return [(title, [o.flag for o in OPTIONS if o.group == title]) for title in GROUPS]


def readme_groups() -> list[tuple[str, list[str]]]:
    """The ``####`` headings of the README's Flags section and the first flag of each row."""
    section = README.split("\n## Flags\n", 1)[1].split("\n## ", 1)[0]
    groups: list[tuple[str, list[str]]] = []
    for line in section.splitlines():
        if line.startswith("#### "):
            groups.append((line[5:].strip(), []))
        elif line.startswith("| `-") and groups:
            first_cell = line.split("|")[1]
            flags = re.findall(r"`(--[a-z0-9-]+)`", first_cell)
            assert flags, line
            groups[-1][1].append(flags[0])
    return groups


def help_output(columns: int) -> str:
    env = {"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "bivio", "--help"], cwd=str(ROOT), env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_option_has_a_known_group_and_every_group_options():
    for option in OPTIONS:
        assert option.group in GROUPS, (option.name, option.group)
    for title, flags in options_by_group():
        assert flags, f"group {title!r} has no option"


def test_options_of_a_group_are_together_in_the_table():
    """OPTIONS lists each group's options as one run, in the groups' order."""
    seen = [o.group for o in OPTIONS]
    runs = [g for i, g in enumerate(seen) if i == 0 or seen[i - 1] != g]
    assert runs == list(GROUPS)


def test_help_groups_are_the_option_groups_in_order():
    parser = build_parser()
    titled = [g for g in parser._action_groups if g._group_actions]
    titles = [g.title for g in titled]
    assert titles == ["positional arguments", *GROUPS, OTHER_GROUP]
    for group in titled[1:-1]:
        flags = [a.option_strings[-1] if not a.option_strings[-1].startswith("--no-")
                 else a.option_strings[-2] for a in group._group_actions]
        assert flags == dict(options_by_group())[group.title], group.title


def test_readme_groups_and_flags_match_the_options_in_order():
    expected = [*options_by_group(), (OTHER_GROUP, ["--version", "--help"])]
    assert readme_groups() == expected


def test_help_shows_the_groups_in_order():
    text = help_output(100)
    positions = [text.index(f"\n{title}:\n") for title in [*GROUPS, OTHER_GROUP]]
    assert positions == sorted(positions)
    assert text.startswith("usage: bivio [OPTIONS] MODULE:ATTR\n")


@pytest.mark.parametrize("columns", [60, 80, 132, 250])
def test_no_flag_or_tag_is_broken_across_lines(columns):
    text = help_output(columns)
    words = set(text.split())
    for option in OPTIONS:
        # Whole, as one word: the flag (or its --no- form, or "--flag," before it) ...
        assert any(w.strip(",") == option.flag for w in words), option.flag
        # ... and its environment variable, inside an unbroken tag.
        assert f"[env: {option.env}]" in text, option.env
    for line in text.splitlines():
        assert not re.search(r"[A-Za-z0-9]-$", line), f"a word broken at a hyphen: {line!r}"
        assert not re.search(r"\[(default|env):$", line), f"a tag broken: {line!r}"
        if len(line) > max(columns, 60):
            # Only a line that is one unbreakable word (a long flag with its metavar)
            # may be longer than the terminal.
            assert len(line.split()) <= 2, line


def test_help_tags_come_in_one_order():
    for option in OPTIONS:
        text = help_text(option)
        assert text.startswith(option.help)
        tags = re.findall(r"\[(\w+): [^\]]*\]", text[len(option.help):])
        assert tags in (["default", "env"], ["env"]), (option.name, tags)
        assert text.endswith(f"[env: {option.env}]")
        if option.default not in (None, (), ""):
            assert "[default: " in text, option.name


def test_short_flags_are_gunicorns():
    parser = build_parser()
    assert parser.parse_args(["-w", "3", "-b", "0.0.0.0:9000", "app:app"]).workers == "3"
    shorts = {o.short: o.flag for o in OPTIONS if o.short}
    assert shorts == {"-w": "--workers", "-b": "--bind"}
