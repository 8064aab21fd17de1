#!/usr/bin/env bash
# Makes sure LittleHorse's own Python SDK (PyPI littlehorse-client, pinned)
# is installed in the ignored virtualenv .build-py/, and prints the path of
# its python. Exits 3 with a reason on stderr when it cannot be installed
# (PyPI unreachable): callers skip with that reason, never silently.
set -uo pipefail
cd "$(dirname "$0")/.."
LH_CLIENT_VERSION=1.3.0
py=.build-py/bin/python
if [ ! -x "$py" ] || ! "$py" -c "import littlehorse" 2>/dev/null; then
  python3 -m venv .build-py >/dev/null 2>&1 && \
    .build-py/bin/pip install -q "littlehorse-client==$LH_CLIENT_VERSION" >&2
fi
if ! "$py" -c "import littlehorse" 2>/dev/null; then
  echo "could not install littlehorse-client==$LH_CLIENT_VERSION from PyPI into .build-py/" >&2
  exit 3
fi
echo "$PWD/$py"
