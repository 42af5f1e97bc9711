#!/usr/bin/env bash
# Everything the test suite needs on a fresh Debian machine, nothing installed by hand: run as
# root from anywhere in the checkout, then run the suite with the same python3:
#     ./tests/setup.sh && python3 -m pytest
# Idempotent (safe to re-run). .ci/run calls exactly this before its checks and test runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/setup.sh: run as root (it installs packages and creates a test user)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# slirp4netns: the reference for differential tests; util-linux: unshare/nsenter/setpriv;
# groff-base: the man page check; busybox-static: ping/arping/udhcpc clients in guests;
# iperf3: TCP tests and benchmarks; curl: the client of `pyslirp4netns run`'s tests;
# tshark: reads the --pcap captures (test_observability.py).
apt-get install -y -qq --no-install-recommends \
    slirp4netns iproute2 util-linux groff-base procps busybox-static iperf3 curl tshark \
    dhcpcd-base >/dev/null  # dhcpcd: a stock stateless DHCPv6 client (test_dhcpv6.py)

# Debian's own python3 comes without pip, and python-pytun builds from source.
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends python3-pip python3-dev gcc >/dev/null
fi
pip_flags=(-q)
# PEP 668 (Debian 12's system python3): this machine is for the tests, install into it anyway.
if python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'
then
    pip_flags+=(--break-system-packages)
else
    python3 -m pip install "${pip_flags[@]}" --upgrade pip
fi
python3 -m pip install "${pip_flags[@]}" -e '.[test]'

# Rootless cases run as a real unprivileged user, with /dev/net/tun as distributions ship it.
id pyslirp4netns-test >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin pyslirp4netns-test
chmod 0666 /dev/net/tun
# That user must reach the interpreter and this checkout: grant traverse (not list) on parents.
grant_traverse() {
    local dir=$1
    while [ "$dir" != "/" ]; do chmod o+x "$dir"; dir=$(dirname "$dir"); done
}
grant_traverse "$(dirname "$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')")"
grant_traverse "$PWD"
# rootlesskit, podman, runc and the test user's subordinate ids for the end-to-end client tests.
bash tests/clients_setup.sh
echo "tests/setup.sh: ready; now: python3 -m pytest"
