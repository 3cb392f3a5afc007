"""Helpers for the browser tests: the fake microphone's WAV file and the Node driver.

The driver (drive_page.mjs) runs Debian's /usr/bin/chromium through playwright-core from
tests/browser/node_modules (`npm ci` there; .ci/install-browser.sh does it). It reports
what the page showed as JSON lines; `run_driver` hands each event to a callback, so the
test can act at the right moment (start the agent once the page has joined, end the
connection from the server side, ...).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARTIFACTS = REPO / ".artifacts" / "browser"
DRIVER = HERE / "drive_page.mjs"

# One sentence: one utterance for a voice activity detector (no long pause inside).
SPEECH = "Hello agent, can you hear me"


def require_tools() -> None:
    """Fail (not skip) with the fix when the browser or its driver is missing."""
    missing = [
        what
        for what, ok in (
            ("/usr/bin/chromium (apt-get install chromium)", Path("/usr/bin/chromium").exists()),
            ("node", shutil.which("node") is not None),
            ("espeak-ng", shutil.which("espeak-ng") is not None),
            ("sox", shutil.which("sox") is not None),
            (
                "tests/browser/node_modules/playwright-core (npm ci in tests/browser)",
                (HERE / "node_modules" / "playwright-core").is_dir(),
            ),
        )
        if not ok
    ]
    if missing:
        raise RuntimeError("browser tests need: " + ", ".join(missing) + "; run .ci/install-browser.sh")


def speech_wav(directory: Path) -> Path:
    """Half a second of silence, a spoken sentence, then 40 s of silence: 48 kHz, 16-bit,
    mono PCM. Chromium loops the file as its fake microphone; the long silence makes one
    utterance per test, so the user does not talk over the agent's answer."""
    directory.mkdir(parents=True, exist_ok=True)
    raw, wav = directory / "speech-raw.wav", directory / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SPEECH], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", "-e", "signed-integer", str(wav), "pad", "0.5", "40"],
        check=True,
        capture_output=True,
    )
    return wav


async def run_driver(
    config: dict[str, Any],
    on_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    timeout_s: float = 150.0,
) -> dict[str, Any]:
    """Run drive_page.mjs with config; return its final result (stderr kept for failures)."""
    env = {**os.environ, "NODE_PATH": str(HERE / "node_modules")}
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        json.dumps(config),
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    result: dict[str, Any] | None = None

    async def read_events() -> None:
        nonlocal result
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "result":
                result = event
            elif on_event is not None:
                await on_event(event)

    try:
        await asyncio.wait_for(read_events(), timeout_s)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await stderr_task).decode(errors="replace")
    if result is None:
        raise AssertionError(f"the browser driver gave no result (exit {proc.returncode}):\n{stderr[-4000:]}")
    result["stderr"] = stderr[-4000:]
    (Path(config["artifactsDir"]) / f"{config['scenario']}-result.json").write_text(json.dumps(result, indent=2))
    return result
