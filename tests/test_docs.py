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
