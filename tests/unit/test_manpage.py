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


def _compatibility_items() -> list[str]:
    """The COMPATIBILITY section's paragraphs (intro and each bullet) as the reader sees them."""
    items: list[list[str]] = [[]]
    for line in _section("COMPATIBILITY"):
        if line.startswith(".IP"):
            items.append([])
        else:
            items[-1].append(_to_text(line))
    return [" ".join(item) for item in items]


def test_synopsis_shows_the_usage_line_of_slirp4netns_1_3() -> None:
    synopsis = " ".join(_to_text(line) for line in _section("SYNOPSIS")).replace("&", "")
    assert "pyslirp4netns [OPTION]... PID|PATH|FD [TAPNAME]" in synopsis
    assert cli.usage_text("pyslirp4netns").startswith(
        "Usage: pyslirp4netns [OPTION]... PID|PATH|FD [TAPNAME]\n"
    )


def test_compatibility_names_the_slirp4netns_version_of_every_line() -> None:
    intro, *bullets = _compatibility_items()
    assert "1.2.0" in intro and "1.3.2" in intro
    version = re.compile(r"\b1\.[23]\.[0-3]\b")
    for bullet in bullets:
        assert version.search(bullet), bullet


@pytest.mark.parametrize(
    ("version", "needles"),
    [
        ("1.3.0", ["PID|PATH|FD [TAPNAME]", "[path|pid|tapfd]"]),
        ("1.3.0", ["--netns-type=tapfd", "-c", "silently"]),
        ("1.2.1", ["--enable-sandbox", "/etc/resolv.conf", "attempting to bind it as well"]),
        ("1.2.0", ["--version", "SLIRP_CONFIG_VERSION_MAX: 4"]),
    ],
)
def test_compatibility_lists_what_later_slirp4netns_changed(
    version: str, needles: list[str]
) -> None:
    """Each 1.2.1-1.3.2 change we follow is a line naming its version (issue 14)."""
    matching = [
        bullet
        for bullet in _compatibility_items()[1:]
        if f"Follows slirp4netns {version}" in bullet
        and all(needle in bullet for needle in needles)
    ]
    assert len(matching) == 1, (version, needles)
