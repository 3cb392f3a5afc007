"""Who the agent listens to when several people share the room (a meeting).

The framework's room I/O follows one participant at a time and, by default, ends the
conversation when that participant leaves. In a meeting that would hang up on everyone
else, so instead the agent turns to the next person still in the room, and only ends
the conversation when nobody is left.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import AgentSession

logger = logging.getLogger("gemini-agent")

# People, not other agents or recorders, keep a conversation going.
PEOPLE = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP)


def follow_participants(session: AgentSession, room: rtc.Room) -> None:
    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        linked = session.room_io.linked_participant  # None once RoomIO saw them leave
        if linked is not None and linked.identity != participant.identity:
            return  # someone the agent was not listening to left
        remaining = [p for p in room.remote_participants.values() if p.kind in PEOPLE]
        if remaining:
            logger.info("turning to the next participant", extra={"participant": remaining[0].identity})
            session.room_io.set_participant(remaining[0].identity)
        else:
            asyncio.get_running_loop().create_task(session.aclose())

    room.on("participant_disconnected", on_disconnected)
