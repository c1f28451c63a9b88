#!/usr/bin/env bash
# Festival and its voices for the synthetic corpus (borealis_eval/data/festival.py): Debian's
# packages, installed only when one is missing (~190 MB download, mostly festvox-ru's recordings).
set -euo pipefail
MISSING=""
for p in festival festvox-ru festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qx 'install ok installed' || MISSING="$MISSING $p"
done
if [ -z "$MISSING" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends $MISSING
