"""`python agent.py` as an operator meets it: help without credentials, and every failure to
start is one line naming the problem and the fix, with a non-zero exit status."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from devstack.livekit import LocalLiveKitServer, load_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.asyncio(loop_scope="module")
GOOGLE = {"GOOGLE_API_KEY": "test-key-not-used"}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


async def agent(*args: str, env: dict[str, str], timeout: float = 90) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "agent.py", *args, cwd=str(ROOT), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def livekit():
    server = await LocalLiveKitServer(load_config(ROOT / "livekit.yaml", port=0)).start()
    yield server
    await server.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_help_lists_every_command_and_needs_no_credentials():
    env = clean_env()
    code, out, err = await agent("--help", env=env)
    assert code == 0, err
    for command in ("local", "call", "sip", "dial", "start", "connect", "console"):
        assert f"\n  {command} " in out, (command, out)
    code, out, err = await agent("help", "start", env={**env, "AGENT_MODEL__TEMPERATURE": "9"})
    assert code == 0, err
    assert "--drain-timeout" in out and "LIVEKIT_URL" in out


async def test_a_command_this_build_lacks_says_so():
    code, out, err = await agent("dial", "--help", env=clean_env())
    # with the telephony module merged, its own help; without it, one clear line
    assert (code == 0 and "usage" in out.lower()) or (
        code == 2 and "not available in this build" in one_error_line(err)), (code, out, err)


async def test_start_without_livekit_url():
    code, out, err = await agent("start", env=clean_env(**GOOGLE))
    assert code == 2
    line = one_error_line(err)
    assert "LIVEKIT_URL" in line and "agent.py local" in line


async def test_start_against_unreachable_livekit_fails_fast():
    url = f"ws://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, err = await agent("start", env=clean_env(**GOOGLE, LIVEKIT_URL=url, LIVEKIT_API_KEY="k",
                                                      LIVEKIT_API_SECRET="s" * 32), timeout=60)
    assert code == 1
    line = one_error_line(err)
    assert "cannot reach LiveKit at " + url in line and "connection refused" in line and "LIVEKIT_URL" in line


async def test_start_with_keys_livekit_refuses(livekit):
    secret = "not-the-servers-secret-0123456789abcdef"
    code, out, err = await agent("start", env=clean_env(**GOOGLE, LIVEKIT_URL=livekit.url,
                                                      LIVEKIT_API_KEY=livekit.api_key, LIVEKIT_API_SECRET=secret))
    assert code == 1
    line = one_error_line(err)
    assert "refused the API key (401" in line and "LIVEKIT_API_SECRET" in line
    assert secret not in out + err


@pytest.mark.parametrize("setting", ["AGENT_WORKER__HTTP_PORT", "AGENT_OBSERVABILITY__METRICS_PORT"])
async def test_start_on_a_port_in_use_names_the_port_and_its_setting(livekit, setting):
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = {"AGENT_WORKER__HTTP_PORT": "0", "AGENT_OBSERVABILITY__METRICS_PORT": "0", setting: str(port)}
        code, out, err = await agent("start", env=clean_env(
            **GOOGLE, **others, LIVEKIT_URL=livekit.url, LIVEKIT_API_KEY=livekit.api_key,
            LIVEKIT_API_SECRET=livekit.api_secret))
    assert code == 1
    line = one_error_line(err)
    assert f"port {port} is already in use" in line and setting in line


@pytest.mark.parametrize("flag", ["--livekit-port"])
async def test_a_second_local_run_names_the_port_and_the_flag(flag, tmp_path):
    """What a second `agent.py local` meets: its ports taken by the first."""
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--livekit-port": "0", "--web-port": "0", flag: str(port)}
        code, out, err = await agent("local", *[a for kv in ports.items() for a in kv],
                                     env=clean_env(TMPDIR=str(tmp_path)))
    assert code == 1
    line = one_error_line(err)
    assert f"port {port} " in line and "already in use" in line and flag in line
    assert not list(tmp_path.iterdir())  # nothing left behind


async def test_a_worker_that_loses_livekit_exits_non_zero_with_one_line():
    """LiveKit goes away under a running worker: after its retries (here 1) it exits 1 with
    one line saying so, instead of the framework's exit 0."""
    server = await LocalLiveKitServer(load_config(ROOT / "livekit.yaml", port=0)).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "agent.py", "start", cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=clean_env(
                **GOOGLE, LIVEKIT_URL=server.url, LIVEKIT_API_KEY=server.api_key,
                LIVEKIT_API_SECRET=server.api_secret, AGENT_WORKER__CONNECT_RETRIES="1",
                AGENT_WORKER__HTTP_PORT="0", AGENT_OBSERVABILITY__METRICS_PORT="0",
                AGENT_WORKER__NUM_IDLE_PROCESSES="0"))
        await server.workers.wait_for_worker("gemini-agent", timeout=60)
    finally:
        await server.stop()
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == 1, err.decode()[-2000:]
    line = one_error_line(err.decode())
    assert "lost the connection to LiveKit" in line and "LIVEKIT_URL" in line


def test_the_web_server_names_a_taken_port_and_the_setting_that_moves_it():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {**os.environ, "AGENT_WEB__PORT": str(port), "LIVEKIT_URL": "ws://127.0.0.1:7880",
               "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "a-secret-that-is-long-enough-for-hs256"}
        done = subprocess.run([sys.executable, "-m", "agents.web"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "AGENT_WEB__PORT" in done.stderr
    assert "Traceback" not in done.stderr
