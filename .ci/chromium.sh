#!/usr/bin/env bash
# Debian's headless Chromium for the browser tests (tests/e2e), and CJK fonts so that Chinese
# renders in them and in the screenshots. Idempotent: nothing happens when Chromium is there.
# Playwright drives this binary (executable_path=/usr/bin/chromium); it never downloads one.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-noto-cjk
