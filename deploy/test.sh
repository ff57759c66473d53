#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine and run it:
# the virtualenv, Debian's Chromium for the browser tests, PostgreSQL's server binaries for the ledger tests, and a
# one-node Ceph S3 server on 127.0.0.1. The PostgreSQL and Ray tests start their own servers (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x /usr/bin/chromium ]; then  # Debian's Chromium for the browser tests (Playwright drives it, no download)
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then  # PostgreSQL ledger tests start their own server
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'

deploy/s3-local.sh start >/dev/null
trap 'deploy/s3-local.sh stop >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "${ASSETMINT_CEPH_STATE:-/tmp/assetmint-ceph}/env.sh"

export ASSETMINT_TEST_NEEDS_POSTGRES=1 ASSETMINT_TEST_NEEDS_RAY=1  # installed above: their tests must run, not skip
.venv/bin/python -m pytest "$@"
