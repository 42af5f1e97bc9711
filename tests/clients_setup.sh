#!/usr/bin/env bash
# One-time, idempotent setup for tests/integration/test_clients.py (rootlesskit and rootless
# podman driving slirp4netns / pyslirp4netns). Run as root; tests/setup.sh calls it. Safe to re-run.
set -euo pipefail

USER_NAME=pyslirp4netns-test
export DEBIAN_FRONTEND=noninteractive

# podman 4.3.1 and rootlesskit 1.1.0 from Debian 12. runc, not crun: crun fails on this VM's
# cgroup setup. uidmap: newuidmap/newgidmap, which both clients use to map the subordinate ids.
# busybox-static: httpd and the container's rootfs. curl: the host-side HTTP client.
# --no-install-recommends keeps out buildah, fuse-overlayfs and dbus (storage is vfs).
# docker.io 20.10.24 (with containerd and tini): rootless Docker (tests/integration/test_docker.py)
# through its dockerd-rootless.sh; recommends (apparmor, cgroupfs-mount) are not needed.
PACKAGES=(podman runc conmon rootlesskit uidmap busybox-static slirp4netns curl python3 docker.io)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' ||
        missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    # docker.io and containerd would start the system daemons (invoke-rc.d): a root dockerd
    # would set up docker0 and iptables rules in the machine's own network namespace. A
    # policy-rc.d answering 101 ("action forbidden") stops that; one already there is kept.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Nothing may run the system's docker daemon (there is no systemd here; with one, the units
# stay stopped and disabled). The tests only ever run a rootless dockerd of their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket containerd.service >/dev/null 2>&1 || true
fi

# The unprivileged user (the same command tests/setup.sh uses, in case this runs first).
id "$USER_NAME" >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME"

# Subordinate ids: rootlesskit and rootless podman both refuse (or degrade to a single-id map)
# without them. 65536 ids above every range already handed out, so nothing overlaps.
add_subids() {
    local file=$1
    touch "$file"
    grep -q "^${USER_NAME}:" "$file" && return 0
    local start
    start=$(awk -F: 'BEGIN { end = 100000 } NF == 3 && $2 + $3 > end { end = $2 + $3 }
        END { print end }' "$file")
    echo "${USER_NAME}:${start}:65536" >>"$file"
}
add_subids /etc/subuid
add_subids /etc/subgid

# slirp4netns (either one) opens the tap in the user's namespace through /dev/net/tun.
chmod 0666 /dev/net/tun
# Debian kernels may gate unprivileged user namespaces behind this sysctl; absent on others.
if [ -e /proc/sys/kernel/unprivileged_userns_clone ]; then
    sysctl -q -w kernel.unprivileged_userns_clone=1
fi
