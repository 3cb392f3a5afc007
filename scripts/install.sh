#!/usr/bin/env bash
# Installs everything the tests, benchmarks and the local run need on a Debian machine:
# the project with its test extras (pip), and the system and npm packages the tests use
# (espeak-ng and sox for speech, Debian's Chromium driven by playwright-core for the
# browser tests, the web client's build tools). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v ip >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
}
bash .ci/install-browser.sh
python -m pip install -q --disable-pip-version-check -e ".[test]"
