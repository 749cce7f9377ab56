#!/usr/bin/env bash
# The browser the site's end-to-end test drives: Debian's Chromium, installed when missing.
# (Playwright drives it through executable_path; no browser is downloaded by Playwright.)
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_chromium: /usr/bin/chromium is missing; install it as root: apt-get install chromium chromium-driver" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
