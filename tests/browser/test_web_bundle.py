"""The committed bundle in agents/web/static is what web/src builds to (npm ci && npm run build)."""

from __future__ import annotations

import subprocess

from .harness import REPO


def test_committed_bundle_matches_the_source() -> None:
    web = REPO / "web"
    assert (web / "node_modules" / "esbuild").is_dir(), "run .ci/install-browser.sh (npm ci in web/)"
    proc = subprocess.run(["node", "build.mjs", "--check"], cwd=web, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "matches" in proc.stdout
