#!/usr/bin/env bash
# Installs the real programs the tests run against on loopback (DESIGN.md §8). Servers are
# installed but never started here: each test starts and stops its own on 127.0.0.1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# command-to-check:debian-package
PEERS=(
    "unshare:util-linux"
    "file:file"
    "curl:curl"
    "openssl:openssl"
    "swupdate:swupdate"
    "nginx:nginx"
    "dbus-daemon:dbus-daemon"
    # The SCEP server of the enrollment tests (micromdm/scep), and `ip` for their private
    # network namespaces (scepserver listens on every address).
    "scepserver:scep"
    "ip:iproute2"
    # The tethered device of the dmtether tests is an OpenSSH server on loopback; the desktop
    # side uses the system OpenSSH client.
    "/usr/sbin/sshd:openssh-server"
    "ssh:openssh-client"
    # The web console's browser tests: Debian's Chromium and its WebDriver, never a
    # downloaded browser.
    "chromium:chromium"
    "chromedriver:chromium-driver"
    # Several dmmp instances: the TCP load balancer in front of them (TLS passed through).
    "haproxy:haproxy"
    # Software updates: test repositories made with Debian's own tools (packages built with
    # dpkg-deb, indices and release files with apt-ftparchive, signed with gpg) and verified
    # by dmmp with gpgv, as apt verifies them.
    "apt-ftparchive:apt-utils"
    "gpg:gpg"
    "gpgv:gpgv"
    "dpkg-deb:dpkg"
    # System images for the virtual machine's tests: RAUC bundles made with RAUC itself (it
    # packs them with mksquashfs); the libubootenv tools read SWUpdate's update state in the
    # U-Boot environment file the host-side checks look at.
    "rauc:rauc"
    "mksquashfs:squashfs-tools"
    "fw_printenv:libubootenv-tool"
    "cpio:cpio"
)

missing=()
for pair in "${PEERS[@]}"; do
    cmd=${pair%%:*}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("${pair#*:}")
done
# rauc-hawkbit (a real Python DDI client) runs on Debian's Python with its GObject bindings.
/usr/bin/python3 -c 'import gi' >/dev/null 2>&1 || missing+=(python3-gi)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The PostgreSQL store's tests start private clusters with Debian's server binaries, which
# are not on the PATH (/usr/lib/postgresql/N/bin).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-peers: installing ${missing[*]}" >&2
    apt-get update -q >/dev/null 2>&1 || echo "setup-peers: apt-get update reported errors; trying anyway" >&2
    # Installed, never started: a package's own service (PostgreSQL's main cluster, HAProxy)
    # would hold ports and run outside the tests' control.
    no_start=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        no_start=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ -n "$no_start" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# rauc-hawkbit 0.2.0 from PyPI, in a virtual environment that sees Debian's python3-gi
# (building PyGObject from source would need cairo). Its D-Bus peer, RAUC, is played by
# tests/peers/fake_rauc.py on a private bus.
venv=target/peers/rauc-hawkbit
if [ ! -x "$venv/bin/rauc-hawkbit-client" ]; then
    echo "setup-peers: rauc-hawkbit into $venv" >&2
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps rauc-hawkbit==0.2.0 gbulb==0.6.6
    "$venv/bin/pip" install -q --disable-pip-version-check aiohttp==3.14.5
fi
# schemathesis from PyPI, the OpenAPI tool that checks the management API's document against
# the live server (tests/tests/e2e/api.rs); hypothesis pinned to one it works with.
venv=target/peers/schemathesis
if [ ! -x "$venv/bin/st" ]; then
    echo "setup-peers: schemathesis into $venv" >&2
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check schemathesis==3.39.16 hypothesis==6.131.9
fi
echo "setup-peers: all peers present" >&2
