"""The man page documents exactly the parser's options and formats without groff warnings."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pyslirp4netns import cli

MANPAGE = Path(__file__).resolve().parents[2] / "man" / "pyslirp4netns.1"
_FONT = re.compile(r"\\f(?:[BIRP]|\[[A-Z]*\])")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z0-9][A-Za-z0-9-]*)")


def _section(name: str) -> list[str]:
    lines = MANPAGE.read_text().splitlines()
    start = lines.index(f".SH {name}") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(".SH "))
    return lines[start:end]


def _to_text(roff: str) -> str:
    """A roff line as the reader sees it: macros, quotes and font changes removed."""
    text = _FONT.sub("", roff).replace("\\-", "-")
    macro, _, args = text.partition(" ")
    if macro in {".BR", ".RB", ".BI", ".IB", ".IR", ".RI"}:
        return "".join(shlex.split(args))  # alternating fonts: arguments are joined
    if macro in {".B", ".I"}:
        return args.replace('"', "")
    return text


def documented_options() -> set[str]:
    """The options named in the tag line of each .TP entry of OPTIONS."""
    lines = _section("OPTIONS")
    tags = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.startswith(".TP")]
    return {option for tag in tags for option in _OPTION.findall(_to_text(tag))}


def parser_options() -> set[str]:
    longs = {f"--{option.name}" for option in cli.LONG_OPTIONS + cli.EXTENSION_OPTIONS}
    shorts = {f"-{letter}" for letter in cli.SHORT_OPTIONS if letter != ":"}
    return longs | shorts


def test_options_section_documents_exactly_the_parser_options() -> None:
    assert documented_options() == parser_options()


def test_tag_lines_pair_short_and_long_options_like_the_table() -> None:
    lines = _section("OPTIONS")
    tags = [_to_text(lines[i + 1]) for i, line in enumerate(lines[:-1]) if line.startswith(".TP")]
    for option in cli.LONG_OPTIONS + cli.EXTENSION_OPTIONS:
        if len(option.key) == 1:
            assert any(tag.startswith(f"-{option.key}, --{option.name}") for tag in tags)
        if option.has_arg:
            assert any(
                tag.startswith(f"--{option.name}=") or f", --{option.name}=" in tag for tag in tags
            ), option.name


def test_tapfd_and_deprecated_aliases_are_documented() -> None:
    text = " ".join(_to_text(line) for line in _section("OPTIONS"))
    assert "tapfd" in text
    for replacement in cli.DEPRECATED_ALIASES.values():
        assert f"Deprecated alias of --{replacement}" in text


def test_required_sections() -> None:
    headings = [line for line in MANPAGE.read_text().splitlines() if line.startswith(".SH ")]
    assert headings == [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH RUN",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        ".SH COMPATIBILITY",
        ".SH SEE ALSO",
    ]


def test_run_section_names_its_defaults_and_the_options_it_refuses() -> None:
    from pyslirp4netns.shell import run

    text = " ".join(_to_text(line) for line in _section("RUN"))
    assert " ".join(run.DEFAULTS) in text
    for option in [*run.NOT_FOR_RUN.values(), "--netns-type", "--target-type"]:
        assert option in text
    synopsis = " ".join(_to_text(line) for line in _section("SYNOPSIS")).replace("&", "")
    assert "pyslirp4netns run [OPTION]... -- CMD [ARG]..." in synopsis


def test_default_address_table() -> None:
    text = "\n".join(_section("DESCRIPTION"))
    for address in (
        "10.0.2.0/24",
        "10.0.2.2",
        "10.0.2.3",
        "10.0.2.15",
        "10.0.2.30",
        "10.0.2.100",
        "fd00::/64",
        "fd00::2",
        "fd00::3",
    ):
        assert address in text


def test_groff_reports_no_warnings() -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (Debian package groff-base)")
    result = subprocess.run(
        [groff, "-man", "-ww", "-z", str(MANPAGE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
