#!/usr/bin/env bash
# Headless Chromium for tests/test_report_browser.py: Debian's package, installed only when missing.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y chromium
