#!/usr/bin/env bash
# Makes sure the dashboard's test tools are here: Debian's chromium and
# chromium-driver (headless), and Selenium plus the Prometheus client's
# parser (PyPI, pinned) in the ignored virtualenv .build-py/. Prints the
# path of that virtualenv's python. Exits 3 with the reason on stderr when
# something cannot be installed: callers skip with that reason, never silently.
set -uo pipefail
cd "$(dirname "$0")/.."
SELENIUM_VERSION=4.40.0
PROMETHEUS_CLIENT_VERSION=0.26.0
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing chromium and chromium-driver (Debian)" >&2
  scripts/apt-install.sh chromium chromium-driver
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "could not install Debian's chromium and chromium-driver (apt-get as root)" >&2
  exit 3
fi
py=.build-py/bin/python
[ -x "$py" ] || python3 -m venv .build-py >/dev/null 2>&1
if ! "$py" -c "import selenium, prometheus_client" 2>/dev/null; then
  "$py" -m pip install -q "selenium==$SELENIUM_VERSION" "prometheus-client==$PROMETHEUS_CLIENT_VERSION" >&2
fi
if ! "$py" -c "import selenium, prometheus_client" 2>/dev/null; then
  echo "could not install selenium==$SELENIUM_VERSION and prometheus-client==$PROMETHEUS_CLIENT_VERSION from PyPI into .build-py/" >&2
  exit 3
fi
echo "$PWD/$py"
