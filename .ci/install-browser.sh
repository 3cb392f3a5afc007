#!/usr/bin/env bash
# Installs what the web client's tests need; safe to run again (does nothing twice).
#   - Debian's Chromium (+ chromedriver), espeak-ng and sox (the fake microphone's speech)
#   - npm packages: tests/browser (playwright-core, driving /usr/bin/chromium; it never
#     downloads a browser) and web/ (livekit-client + esbuild, to check the committed bundle)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=()
command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || pkgs+=(chromium-driver)
command -v espeak-ng >/dev/null 2>&1 || pkgs+=(espeak-ng)
command -v sox >/dev/null 2>&1 || pkgs+=(sox)
if ((${#pkgs[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# npm ci only when package-lock.json changed since this script last installed it.
for dir in tests/browser web; do
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  stamp="$dir/node_modules/.installed-lock-sha256"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
done
