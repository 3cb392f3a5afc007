"""The product end to end on this machine: the local LiveKit server, the offline Gemini
server, and real `python agent.py start` worker processes; callers use the real SDK."""

from __future__ import annotations

import asyncio
import itertools

import pytest_asyncio

from devstack.stack import LocalStack

from ..support.caller import Caller, caller_token

_rooms = itertools.count(1)

# A Python SDK caller is a headset: no acoustic echo, so no caller audio is discarded.
# Its level is already right, and gain control ramping over the first second would
# change the very speech the tests compare the echo with.
HEADSET_AGENT_ENV = {
    "AGENT_AGENT__GREET": "false",
    "AGENT_AUDIO__ECHO_WARMUP_S": "0",
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=env) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker(HEADSET_AGENT_ENV)
    yield w
    await w.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def join(stack):
    """join(room=None, agent_name="gemini-agent") -> a connected Caller (left at teardown)."""
    callers: list[Caller] = []

    async def make(room: str | None = None, *, agent_name: str | None = "gemini-agent",
                   identity: str = "caller", kind: str | None = None) -> Caller:
        room = room or f"room-{next(_rooms)}"
        caller = Caller(identity)
        token = caller_token(stack.livekit.api_key, stack.livekit.api_secret, room, identity,
                             agent_name=agent_name, kind=kind)
        await caller.join(stack.livekit.url, token)
        callers.append(caller)
        return caller

    yield make
    for c in callers:
        await asyncio.wait_for(c.leave(), 15)
