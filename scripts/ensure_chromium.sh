#!/bin/sh
# Install Debian's chromium for the report render test (tests/integration/test_report_render.py)
# when it is missing. Idempotent; needs root and the Debian package mirrors. Launched by the
# test's fixture, or by hand:  sudo scripts/ensure_chromium.sh
# --no-install-recommends: chromium-common recommends ~90 packages (cups, avahi, udev, ...)
# that the binary never loads; fonts-liberation gives text the usual metrics.
set -eu
if [ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "chromium is missing and this is not root: run  sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
/usr/lib/chromium/chromium --version 2>/dev/null || chromium --version
