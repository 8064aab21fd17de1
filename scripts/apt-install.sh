#!/usr/bin/env bash
# Installs Debian packages that a script needs, when it can: as root with
# apt-get (from the local package lists first, then after an update).
# Elsewhere it does nothing; the caller checks for what it needs and says
# SKIPPED (or fails) itself. Quiet; the exit status is apt-get's.
#   scripts/apt-install.sh PACKAGE...
set -uo pipefail
[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || exit 0
{ apt-get install -y -qq "$@" || { apt-get update -qq && apt-get install -y -qq "$@"; }; } >/dev/null 2>&1
