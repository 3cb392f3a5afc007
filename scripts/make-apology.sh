#!/usr/bin/env bash
# Remakes config/apology.wav (the spoken apology of connection.apology_text) with espeak-ng
# and sox. Use your own recording instead for a production voice: any WAV works.
set -euo pipefail
cd "$(dirname "$0")/.."
text="$(python -c 'from agents.settings import load_settings; print(load_settings().connection.apology_text)')"
tmp="$(mktemp --suffix .wav)"; trap 'rm -f "$tmp"' EXIT
espeak-ng -v en-us -s 165 -w "$tmp" "$text"
sox "$tmp" -r 16000 -c 1 -b 16 config/apology.wav
