"""Helpers for the browser tests: the fake microphone's WAV file and the Node driver.

The driver (drive_page.mjs) runs Debian's /usr/bin/chromium through playwright-core from
tests/browser/node_modules (`npm ci` there; .ci/install-browser.sh does it). One driver
run is one browser going through several scenarios; it reports what the pages showed as
JSON lines. `run_driver` hands each event to a callback, so the test can act at the right
moment (e.g. drop a page's connection from the server side once it has joined), and
returns each scenario's result by name.
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


def speech_wav(directory: Path, lead_s: float = 0.5) -> Path:
    """lead_s of silence, a spoken sentence, then 40 s of silence: 48 kHz, 16-bit, mono
    PCM. Chromium loops the file as its fake microphone; the long silence makes one
    utterance per call, so the person does not talk over the agent's answer."""
    directory.mkdir(parents=True, exist_ok=True)
    raw, wav = directory / "speech-raw.wav", directory / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), SPEECH], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", "-e", "signed-integer", str(wav), "pad", str(lead_s), "40"],
        check=True,
        capture_output=True,
    )
    return wav


async def run_driver(
    config: dict[str, Any],
    on_event: Callable[[dict[str, Any]], Awaitable[str | None]] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, dict[str, Any]]:
    """Run drive_page.mjs with config; return {scenario: result} (stderr kept for failures).
    A line that on_event returns is written to the driver's stdin (its answer to "ready")."""
    env = {**os.environ, "NODE_PATH": str(HERE / "node_modules")}
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(DRIVER),
        json.dumps(config),
        cwd=HERE,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 22,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(proc.stderr.read())
    results: dict[str, dict[str, Any]] = {}

    async def read_events() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "scenario":
                results[event["scenario"]] = event
            elif event.get("event") == "done" and proc.stdin is not None:
                proc.stdin.close()  # the driver's stdin reader ends, and so does the driver
            elif event.get("event") != "done" and on_event is not None:
                reply = await on_event(event)
                if reply is not None and proc.stdin is not None:
                    proc.stdin.write(reply.encode() + b"\n")
                    await proc.stdin.drain()

    try:
        await asyncio.wait_for(read_events(), timeout_s)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await stderr_task).decode(errors="replace")
    artifacts = Path(config["artifactsDir"])
    for name, result in results.items():
        result["stderr"] = stderr[-4000:]
        (artifacts / f"{name}-result.json").write_text(json.dumps(result, indent=2))
    missing = [s for s in config["scenarios"] if s not in results]
    for name in missing:
        results[name] = {"ok": False, "error": f"the driver gave no result (exit {proc.returncode})", "stderr": stderr[-4000:]}
    return results
