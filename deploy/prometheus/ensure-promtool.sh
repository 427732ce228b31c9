#!/bin/sh
# Make sure `promtool` is on PATH, for the alert rule tests (tests/ops/test_alerts.py).
#
# Idempotent: does nothing when promtool is already there. Otherwise installs Debian's
# `prometheus` package (which ships promtool) with apt-get, as root or through sudo.
# Anywhere else it stops with a message saying what to install by hand.
set -eu

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool not found and apt-get unavailable: install Prometheus's promtool" \
        "(https://prometheus.io/download/) and put it on PATH, or set PROMTOOL" >&2
    exit 1
fi

as_root=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "promtool not found: run 'apt-get install prometheus' as root" >&2
        exit 1
    fi
    as_root="sudo"
fi

echo "promtool not found: installing Debian's prometheus package (it ships promtool)" >&2
# No recommends: only promtool is wanted, not the node exporter. In a container without an
# init system the package's service cannot start; that is expected and harmless here.
$as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null

command -v promtool >/dev/null 2>&1 || {
    echo "the prometheus package installed no promtool on PATH" >&2
    exit 1
}
