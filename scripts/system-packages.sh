#!/usr/bin/env bash
# System programs the tests start themselves: redis-server (the response cache's Redis backend) and promtool
# (Debian's `prometheus` package; it checks and unit-tests observability/prometheus/rules.yml). Installed with apt
# when missing and apt can run (as root, or with passwordless sudo); otherwise it says what to install.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "install: the tests need ${missing[*]}; install them (e.g. apt-get install ${missing[*]})" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install: the tests need ${missing[*]} and this host has no apt-get; install them" >&2
    exit 1
fi
echo "install: system packages ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
