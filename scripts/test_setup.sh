#!/usr/bin/env bash
# What the test suite needs beyond .venv: OpenSSH's server, for the SSH-remote test (a real sshd
# on 127.0.0.1). `make test` and CI (.ci/run -> make test) both run this. It installs the
# server where apt is there and we are root or have password-less sudo; otherwise it says the
# one command to run, and the SSH test fails with the same command. Never fatal here.
set -u
SSHD=/usr/sbin/sshd
INSTALL="sudo apt-get install -y openssh-server"

[ -x "$SSHD" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "test setup: $SSHD missing and no apt-get here; install OpenSSH's server with your package manager" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "test setup: $SSHD missing; run: $INSTALL" >&2
    exit 0
fi
echo "test setup: installing openssh-server (for the SSH remote test)" >&2
{ $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; } \
    || echo "test setup: could not install openssh-server; run: $INSTALL" >&2
exit 0
