"""Push-to-talk (turn_detection.mode: manual) through a room: the caller's words reach
Gemini only between start_turn and end_turn, framed by activityStart / activityEnd."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from .conftest import HEADSET_AGENT_ENV
from .test_room_conversation import sounds_like

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker({**HEADSET_AGENT_ENV, "AGENT_TURN_DETECTION__MODE": "manual"})
    yield w
    await w.stop()


async def test_only_the_pressed_turn_reaches_the_model_and_is_answered(worker, stack, join, speech):
    earlier = len(stack.gemini.sessions)
    caller = await join()
    agent = await caller.wait_agent()
    await caller.wait_for(lambda: agent.attributes.get("lk.push_to_talk") == "true", 10,
                          "the agent to offer push-to-talk")
    session = await stack.gemini.wait_for_session(earlier + 1)
    assert session.setup["realtime_input_config"]["automatic_activity_detection"]["disabled"]

    # talking without pressing the button: nothing is sent, nothing is answered
    caller.say(speech("This is just me talking to someone else in the room."))
    await caller.wait_spoken()
    await asyncio.sleep(1.0)
    assert "audio" not in session.kinds
    assert caller.heard.first_loud(0) is None

    async def rpc(method: str) -> str:
        return await caller.room.local_participant.perform_rpc(
            destination_identity=agent.identity, method=method, payload="")

    assert await rpc("start_turn") == "ok"
    question = speech("Now I am pressing the button and asking the agent a question.")
    caller.say(question)
    spoken_at = await caller.wait_spoken()
    assert await rpc("end_turn") == "ok"
    reply = await caller.wait_reply(spoken_at)

    kinds = session.kinds
    assert kinds.index("activity_start") < kinds.index("audio") < kinds.index("activity_end")
    assert sounds_like(reply, question) >= 0.8
