"""`pip install .` in a fresh venv gives a working `pyslirp4netns` command and the man page."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What podman and rootlesskit grep --help for (contract §1.4).
CONSUMER_STRINGS = [
    "--disable-host-loopback",
    "--mtu",
    "--enable-sandbox",
    "--enable-seccomp",
    "--cidr",
    "--outbound-addr",
    "--enable-ipv6",
    "--netns-type",
    "--api-socket",
]


@pytest.mark.timeout(300)
def test_pip_install_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        REPO, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__")
    )
    venv = tmp_path / "venv"
    # System site packages provide the dependencies (no download); the package itself must come
    # from this build, which the import check below proves.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    subprocess.run(
        [venv / "bin/pip", "install", "-q", "--no-build-isolation", "--no-deps", src],
        check=True,
        timeout=240,
    )
    where = subprocess.run(
        [venv / "bin/python", "-c", "import pyslirp4netns; print(pyslirp4netns.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(venv)), where
    helped = subprocess.run(
        [venv / "bin/pyslirp4netns", "--help"], capture_output=True, text=True, timeout=30
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"Usage: {venv}/bin/pyslirp4netns [OPTION]... PID|PATH")
    for needle in CONSUMER_STRINGS:
        assert needle in helped.stdout, needle
    version = subprocess.run(
        [venv / "bin/pyslirp4netns", "-v"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0
    assert version.stdout.splitlines()[0].startswith("pyslirp4netns version ")
    assert (venv / "share/man/man1/pyslirp4netns.1").is_file()
