"""A meeting through the local stack: the local LiveKit server, the offline Gemini server
and one real `python agent.py start` worker shared by this folder's tests; every person
is a real SDK participant (tests/support/caller.py)."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest_asyncio
from livekit import rtc

from devstack.stack import LocalStack

from ..e2e.conftest import HEADSET_AGENT_ENV
from ..support.caller import Caller, caller_token

_rooms = itertools.count(1)


class Person(Caller):
    """A caller in a meeting: `heard` is the agent's voice only, not the other people's."""

    def _on_track(self, track: rtc.Track, pub, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            super()._on_track(track, pub, participant)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=env) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker(HEADSET_AGENT_ENV)
    yield w
    await w.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def meeting_room(stack):
    """join(identity) -> a connected Person in this test's room (all left at teardown)."""
    callers: list[Person] = []
    room = f"meeting-{next(_rooms)}"

    async def join(identity: str) -> Person:
        if not callers:
            # On a saturated machine the worker reports itself full for a while, and LiveKit
            # dispatches a new room only to an available worker: wait, as a person would retry.
            async def available() -> None:
                while not any(w.available and w.agent_name == "gemini-agent"
                              for w in stack.livekit.workers.workers.values()):
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(available(), 60)
        caller = Person(identity)
        token = caller_token(stack.livekit.api_key, stack.livekit.api_secret, room, identity,
                             agent_name="gemini-agent")
        await caller.join(stack.livekit.url, token)
        callers.append(caller)
        return caller

    yield join
    for c in callers:
        await asyncio.wait_for(c.leave(), 15)
