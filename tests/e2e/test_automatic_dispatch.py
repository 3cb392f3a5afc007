"""Automatic dispatch (`agent.name: ""`): the product's own worker joins every new room,
with no agent dispatch in the caller's token, and answers the caller.

The `stack` fixture is module-scoped, so this module has a LocalStack (LiveKit server,
Gemini server) of its own: a worker without a name takes every room of its LiveKit server,
and here only this module's rooms exist there."""

from __future__ import annotations

import pytest
import pytest_asyncio
from livekit import rtc

from .conftest import HEADSET_AGENT_ENV
from .test_room_conversation import QUESTION, model_input, sounds_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    # empty name = automatic dispatch; start_worker waits until LiveKit knows a worker
    # registered under the empty agent name
    w = await stack.start_worker({**HEADSET_AGENT_ENV, "AGENT_AGENT__NAME": ""})
    yield w
    await w.stop()


async def test_unnamed_worker_joins_a_room_without_dispatch_and_answers(worker, stack, join, speech):
    [registered] = [w for w in stack.livekit.workers.workers.values() if not w.closed]
    assert registered.agent_name == ""

    earlier = len(stack.gemini.sessions)
    # the caller's token asks for no agent: the room gets LiveKit's automatic dispatch
    caller = await join(agent_name=None)
    agent = await caller.wait_agent()
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    room = stack.livekit.rooms.get_room(caller.room.name)
    assert [d.agent_name for d in room.dispatches.values()] == [""]

    await caller.wait_for(lambda: "listening" in [s for _, s in caller.agent_states], 30,
                          "the agent to listen")
    question = speech(QUESTION)
    caller.say(question)
    reply = await caller.wait_reply(await caller.wait_spoken())
    # the model heard the caller, and the caller hears the (echoed) answer
    session = await stack.gemini.wait_for_session(earlier + 1)
    assert sounds_like(model_input(session), question) >= 0.8
    assert sounds_like(reply, question) >= 0.8
    assert "Traceback" not in worker.log_tail(400)
