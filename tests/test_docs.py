"""A flag that exists is documented: README's flag table lists every option."""

from pathlib import Path

import pytest

from bivio.core.config import OPTIONS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_flag_in_readme(option):
    assert f"`{option.flag}`" in README, f"{option.flag} is missing from README's flag table"
    assert f"`{option.env}`" in README, f"{option.env} is missing from README's flag table"


def test_readme_gives_the_two_commands():
    assert "make run" in README
    assert "make test" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_descriptions_say_what_bivio_serves_today():
    """Stale texts: --help said "an ASGI application", pyproject "(and soon WSGI)",
    the README called hybrid mode "on the way" after it had landed."""
    from bivio.cli import build_parser

    help_text = build_parser().format_help()
    assert "WSGI" in help_text and "ASGI" in help_text
    root = Path(__file__).resolve().parent.parent
    pyproject = (root / "pyproject.toml").read_text()
    description = next(line for line in pyproject.splitlines() if line.startswith("description"))
    assert "WSGI" in description and "soon" not in description
    intro = README.split("\n## ", 1)[0]
    assert "hybrid" in intro and "hybrid WSGI+ASGI mode are on the way" not in intro
