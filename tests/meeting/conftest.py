"""A meeting through the local stack: the local LiveKit server, the offline Gemini server
and one real `python agent.py start` worker shared by this folder's tests; every person
is a real SDK participant (tests/support/caller.py)."""

from __future__ import annotations

import asyncio
import itertools

import pytest_asyncio
from livekit import rtc

from ..support.caller import Caller, caller_token
from ..support.stack import HEADSET_AGENT_ENV, stack, worker  # noqa: F401 - the shared module-scoped fixtures

_rooms = itertools.count(1)


class Person(Caller):
    """A caller in a meeting: receives the agent's tracks only (`heard` is the agent's voice),
    not the other people's."""

    subscribe_to_people = False

    def _on_track(self, track: rtc.Track, pub, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            super()._on_track(track, pub, participant)


@pytest_asyncio.fixture(loop_scope="module")
async def meeting_room(stack):
    """join(identity, agent_name="gemini-agent") -> a connected Person in this test's room (all left at teardown)."""
    callers: list[Person] = []
    room = f"meeting-{next(_rooms)}"

    async def join(identity: str, agent_name: str = "gemini-agent") -> Person:
        if not callers:
            # On a saturated machine the worker reports itself full for a while, and LiveKit
            # dispatches a new room only to an available worker: wait, as a person would retry.
            async def available() -> None:
                while not any(w.available and w.agent_name == agent_name
                              for w in stack.livekit.workers.workers.values()):
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(available(), 60)
        caller = Person(identity)
        token = caller_token(stack.livekit.api_key, stack.livekit.api_secret, room, identity,
                             agent_name=agent_name)
        await caller.join(stack.livekit.url, token)
        callers.append(caller)
        return caller

    yield join
    for c in callers:
        await asyncio.wait_for(c.leave(), 15)


# A second worker, for what the meeting does with video on and late joiners greeted
# (settings are per worker); started only by the tests that ask for it.
EXTRAS_AGENT = "meeting-extras"
EXTRAS_ENV = {
    **HEADSET_AGENT_ENV,
    "AGENT_AGENT__NAME": EXTRAS_AGENT,
    "AGENT_VIDEO__ENABLED": "true",
    "AGENT_VIDEO__FPS": "2",
    "AGENT_VIDEO__SILENT_FPS": "2",  # a fixed rate (in a meeting the floor, not the sampler, says who speaks)
    "AGENT_MEETING__GREET_LATE_JOINERS": "true",
    "AGENT_WORKER__NUM_IDLE_PROCESSES": "1",  # one meeting at a time: registers sooner
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def extras_worker(stack):
    w = await stack.start_worker(EXTRAS_ENV)
    yield w
    await w.stop()
