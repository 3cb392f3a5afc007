"""The README's main command as a person runs it: `python agent.py local` starts everything
and says how to join, the web client is served at the address it prints, `python agent.py
call` through it gets the agent's spoken reply, and Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile

import aiohttp
import psutil
import pytest
import yaml

from ..support.audio import read_wav, resample, speech_similarity, speech_wav, trim_silence

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _clean_env() -> dict[str, str]:
    """No accounts: nothing of LiveKit, Google or the agent's settings from this process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    text = ""
    async with asyncio.timeout(timeout):
        while marker not in text:
            line = await stream.readline()
            if not line:
                break
            text += line.decode()
    return text


async def test_local_run_answers_a_call_and_stops_on_ctrl_c(tmp_path):
    env = _clean_env()
    # the run's temporary files, all removed on exit (a short path: the forkserver's socket is in it)
    env["TMPDIR"] = tempfile.mkdtemp(prefix="lr-")
    local = await asyncio.create_subprocess_exec(
        sys.executable, "agent.py", "local", "--livekit-port", "0", "--web-port", "0",
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        banner = await _read_until(local.stdout, "Ctrl-C stops everything.", 120)
        assert "Ctrl-C stops everything." in banner, (banner, (await local.stderr.read()).decode()[-2000:])
        assert "offline stand-in" in banner and "local stand-in" in banner
        livekit_url = re.search(r"LiveKit\s+(ws://\S+)", banner).group(1)
        page_url = re.search(r"browser:\s+(http://\S+)", banner).group(1)

        # the web client is where the banner says
        async with aiohttp.ClientSession() as http, http.get(page_url) as resp:
            assert resp.status == 200
            page = await resp.text()
        assert "app.js" in page

        # a call from a WAV file, with the keys livekit.yaml gives the local server
        key, secret = next(iter(yaml.safe_load((ROOT / "livekit.yaml").read_text())["keys"].items()))
        question = speech_wav("Please say this sentence back to me", tmp_path / "q.wav")
        call = await asyncio.create_subprocess_exec(
            sys.executable, "agent.py", "call", "--url", livekit_url, "--input", str(question),
            "--output", str(tmp_path / "reply.wav"), "--timeout", "60",
            cwd=str(ROOT), env={**env, "LIVEKIT_API_KEY": str(key), "LIVEKIT_API_SECRET": str(secret)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(call.communicate(), 90)
        assert call.returncode == 0, err.decode()[-2000:]
        reply, rate = read_wav(tmp_path / "reply.wav")
        q, q_rate = read_wav(question)
        similarity = speech_similarity(trim_silence(resample(reply, rate, 16000), 16000),
                                       trim_silence(resample(q, q_rate, 16000), 16000), 16000)
        assert similarity >= 0.8

        # Ctrl-C: everything it started goes away
        started = psutil.Process(local.pid).children(recursive=True)
        assert started, "the local run started no processes"
        local.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(local.communicate(), 60)
        assert local.returncode == 0
        assert "stopped." in rest.decode()
        alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [p.cmdline() for p in alive]
        assert not os.listdir(env["TMPDIR"]), os.listdir(env["TMPDIR"])  # no --keep-logs: nothing left
        os.rmdir(env["TMPDIR"])
    finally:
        if local.returncode is None:
            local.kill()
            await local.wait()


@pytest.mark.parametrize("given", [{"LIVEKIT_URL": "wss://example.livekit.cloud"},
                                   {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "secret"}])
def test_local_run_refuses_half_a_livekit_configuration(given):
    proc = subprocess.run([sys.executable, "agent.py", "local"], cwd=str(ROOT), env={**_clean_env(), **given},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    missing = [n for n in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if n not in given]
    assert proc.stderr.startswith("error: ")
    assert all(n in proc.stderr for n in missing), proc.stderr
    assert "secret" not in proc.stderr.replace("LIVEKIT_API_SECRET", "")
