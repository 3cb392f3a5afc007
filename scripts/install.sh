#!/usr/bin/env bash
# Installs everything the tests, benchmarks and the local run need on a Debian machine:
# the project with its test extras (pip), and the system and npm packages the tests use
# (espeak-ng and sox for speech, Debian's Chromium driven by playwright-core for the
# browser tests, the web client's build tools, the compose-spec schema). Safe to run again.
#
# Needs: Debian (or Ubuntu) with apt-get, run as root (or with passwordless sudo) for the
# system packages; Python >= 3.11 as `python`; node >= 18 with npm. Only the agent itself
# (`pip install -e .`) needs none of the apt or npm parts.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "install.sh: $*" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 \
  || fail "needs Debian or Ubuntu (apt-get) for espeak-ng, sox and Chromium; on other systems install those yourself and run: python -m pip install -e '.[test]'"
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
    || fail "needs root for apt-get: run it as root or with passwordless sudo (sudo bash scripts/install.sh)"
  apt-get() { sudo apt-get "$@"; }
  export -f apt-get
fi
command -v python >/dev/null 2>&1 || fail "needs Python >= 3.11 as \`python\` (e.g. apt-get install python3 python-is-python3, or pyenv)"
python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || fail "needs Python >= 3.11; \`python\` is $(python -V 2>&1)"
command -v npm >/dev/null 2>&1 \
  || fail "needs node >= 18 with npm (apt-get install nodejs npm) for the browser tests and the web client's build check"

command -v ip >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
}
bash .ci/install-browser.sh
python -m pip install -q --disable-pip-version-check -e ".[test]"

# the compose-spec JSON schema the deployment tests validate deploy/compose.yaml against
want="$(sha256sum tests/ops/package-lock.json | cut -d' ' -f1)"
stamp="tests/ops/node_modules/.installed-lock-sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  (cd tests/ops && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
