"""Push-to-talk (turn_detection.mode: manual): the participant marks its own turns.

The client calls RPC methods on the agent participant, as in the agents framework's
push-to-talk pattern: `start_turn` (button pressed) and `end_turn` (released).
Between them the caller's audio flows to Gemini framed by `activityStart`
and `activityEnd`, and Gemini answers when the turn ends; outside them the microphone is
not forwarded at all. In a meeting, whoever presses the button is the one the agent
listens to.
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import AgentSession

logger = logging.getLogger("gemini-agent")

ATTRIBUTE = "lk.push_to_talk"  # tells clients this agent expects start_turn / end_turn


def _realtime_session(session: AgentSession):
    return session.current_agent.realtime_llm_session


async def enable(session: AgentSession, room: rtc.Room) -> None:
    """Register the RPC methods and keep the microphone closed until a turn starts."""
    session.input.set_audio_enabled(False)
    local = room.local_participant

    @local.register_rpc_method("start_turn")
    async def start_turn(data: rtc.RpcInvocationData) -> str:
        session.interrupt()  # barge in on the agent's reply, if any
        session.clear_user_turn()
        session.room_io.set_participant(data.caller_identity)
        # activityStart before any of the turn's audio (one ordered channel to Gemini)
        _realtime_session(session).start_user_activity()
        session.input.set_audio_enabled(True)
        return "ok"

    @local.register_rpc_method("end_turn")
    async def end_turn(data: rtc.RpcInvocationData) -> str:
        session.input.set_audio_enabled(False)
        _realtime_session(session).end_user_activity()
        return "ok"

    await local.set_attributes({ATTRIBUTE: "true"})
