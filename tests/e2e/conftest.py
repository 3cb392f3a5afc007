"""The product end to end on this machine: the local LiveKit server, the offline Gemini
server, and real `python agent.py start` worker processes; callers use the real SDK."""

from __future__ import annotations

import asyncio
import itertools

import pytest_asyncio

from ..support.caller import Caller, caller_token
from ..support.stack import HEADSET_AGENT_ENV, stack, worker  # noqa: F401 - fixtures and the env others import

_rooms = itertools.count(1)


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
