"""Who counts as a person in the room, and the one-to-one way of following them.

The framework's room I/O follows one participant at a time and, by default, ends the
conversation when that participant leaves. With `meeting.enabled: false` (or push-to-talk)
the agent turns to the next person still in the room instead, and only ends the
conversation when nobody is left; with meetings on, agents/meeting.py does this and more.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import AgentSession

logger = logging.getLogger("gemini-agent")

# People, not other agents or recorders, keep a conversation going.
PEOPLE = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
# a participant publishing for the agent itself (e.g. an avatar) is not a person
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"


def is_person(room: rtc.Room, participant: rtc.RemoteParticipant) -> bool:
    return participant.kind in PEOPLE and (
        participant.attributes.get(PUBLISH_ON_BEHALF) != room.local_participant.identity
    )


def people(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    return [p for p in room.remote_participants.values() if is_person(room, p)]


def display_name(participant: rtc.Participant) -> str:
    return participant.name or participant.identity


def follow_participants(session: AgentSession, room: rtc.Room) -> None:
    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        linked = session.room_io.linked_participant  # None once RoomIO saw them leave
        if linked is not None and linked.identity != participant.identity:
            return  # someone the agent was not listening to left
        remaining = people(room)
        if remaining:
            logger.info("turning to the next participant", extra={"participant": remaining[0].identity})
            session.room_io.set_participant(remaining[0].identity)
        else:
            asyncio.get_running_loop().create_task(session.aclose())

    room.on("participant_disconnected", on_disconnected)
