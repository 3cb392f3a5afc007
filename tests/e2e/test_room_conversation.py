"""A conversation through a LiveKit room over real WebRTC: caller → local LiveKit server →
agent worker (`python agent.py start`) → offline Gemini Live → and back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc

from ..support.audio import heard_intact, resample, speech_similarity, trim_silence
from ..support.caller import RATE, caller_token

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTION = "Please repeat after me the quick brown fox jumps over the lazy dog"


def sounds_like(heard: np.ndarray, said: np.ndarray) -> float:
    """Speech similarity in the model's 16 kHz band (see support.audio.speech_similarity)."""
    return speech_similarity(
        trim_silence(resample(heard, RATE, 16000), 16000),
        trim_silence(resample(said, RATE, 16000), 16000),
        16000,
    )


def model_input(session) -> np.ndarray:
    """What the (offline) model heard, as 48 kHz samples."""
    return resample(np.frombuffer(bytes(session.audio_in), np.int16), 16000, RATE)


def model_reply(session) -> np.ndarray:
    """What the model said, as 48 kHz samples."""
    return resample(np.frombuffer(bytes(b"".join(session.replies)), np.int16), 24000, RATE)


async def test_spoken_question_is_answered_in_the_room(worker, stack, join, speech):
    caller = await join()
    agent = await caller.wait_agent()
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await caller.wait_for(lambda: ("listening" in [s for _, s in caller.agent_states]), 30,
                          "the agent to listen")
    question = speech(QUESTION)
    caller.say(question)
    spoken_at = await caller.wait_spoken()

    reply = await caller.wait_reply(spoken_at)
    session = stack.gemini.sessions[-1]
    # caller → room → agent → model: the model heard the caller's words
    assert sounds_like(model_input(session), question) >= 0.8
    # model → agent → room → caller: the caller hears the model's reply, sample for sample
    # (window by window, so that one jitter-buffer gap on a busy machine does not hide that the
    # rest arrived intact)
    assert heard_intact(trim_silence(reply, RATE), trim_silence(model_reply(session), RATE), RATE) >= 0.8
    # and end to end, the reply (an echo) sounds like what the caller said
    assert sounds_like(reply, question) >= 0.8

    # both sides' words arrive as transcription text streams
    await caller.wait_for(lambda: "utterance 1" in caller.said_by_me(), 10, "user transcript")
    await caller.wait_for(lambda: "utterance 1" in caller.said_by_agent(), 10, "agent transcript")
    # and the agent's state goes listening -> speaking (-> listening again once it is done)
    states = [s for _, s in caller.agent_states]
    assert "speaking" in states and "listening" in states[: states.index("speaking")], states
    await caller.wait_for(lambda: caller.agent_states[-1][1] == "listening", 10, "the agent to listen again")


async def test_models_transcripts_reach_the_caller_as_text(worker, stack, join, speech):
    """Gemini's transcript of the caller's words and of its own reply arrive at the caller
    word for word as final lk.transcription text, each attributed to its side."""
    heard_as = "could you please read me the weather forecast for tomorrow"
    answer = "Tomorrow will be sunny with a light breeze from the west."
    stack.gemini.script.transcripts[1] = heard_as
    stack.gemini.script.reply(1, text=answer)  # spoken: the echo, transcribed as `answer`
    try:
        caller = await join()
        await caller.wait_agent()
        await caller.wait_for(lambda: "listening" in [s for _, s in caller.agent_states], 30,
                              "the agent to listen")
        caller.say(speech("What will the weather be like tomorrow?"))
        await caller.wait_reply(await caller.wait_spoken())
        await caller.wait_for(lambda: caller.said_by_me() == heard_as, 10, "the user transcript")
        await caller.wait_for(lambda: caller.said_by_agent() == answer, 10, "the agent transcript")
    finally:
        stack.gemini.script.reset()


async def test_caller_interrupts_the_agent_over_webrtc(worker, stack, join, speech):
    tone = (np.sin(2 * np.pi * 330 * np.arange(24000 * 8) / 24000) * 12000).astype(np.int16)
    stack.gemini.script.reply(1, text="a very long answer", audio=tone.tobytes())
    try:
        caller = await join()
        await caller.wait_agent()
        caller.say(speech("Tell me everything you know."))
        spoken_at = await caller.wait_spoken()
        started = await caller.wait_for(lambda: caller.heard.first_loud(spoken_at), 20,
                                        "the agent's long answer")
        await asyncio.sleep(1.0)
        caller.say(speech("Wait, stop."))
        await caller.wait_for(
            lambda: (t := caller.heard.last_loud()) is not None and t < caller.heard.frames[-1][0] - 1.0,
            10, "the agent's audio to stop")
        played = caller.heard.last_loud() - started
        assert played < 5.0, f"the agent talked over the caller for {played:.1f} s of an 8 s answer"
        session = stack.gemini.active_sessions[-1]
        assert any(m.content.get("interrupted") for m in session.sent)
    finally:
        stack.gemini.script.reset()


async def test_two_rooms_at_once_stay_isolated(worker, stack, join, speech):
    a, b = await join(identity="alice"), await join(identity="bob")
    await asyncio.gather(a.wait_agent(), b.wait_agent())
    await asyncio.sleep(1.0)
    said_a = speech("Alice speaks about apples and oranges in the first room.")
    said_b = speech("Bob talks about boats on the river in the second room, much longer.")
    a.say(said_a)
    b.say(said_b)
    end_a, end_b = await asyncio.gather(a.wait_spoken(), b.wait_spoken())
    heard_a, heard_b = await asyncio.gather(a.wait_reply(end_a), b.wait_reply(end_b))
    # each caller hears its own words back, and not the other room's
    for heard, own, other in ((heard_a, said_a, said_b), (heard_b, said_b, said_a)):
        assert sounds_like(heard, own) >= 0.8
        assert sounds_like(heard, own) - sounds_like(heard, other) >= 0.08


async def test_caller_leaving_ends_the_agent_session(worker, stack, join, speech):
    earlier_sessions = len(stack.gemini.sessions)
    caller = await join()
    agent = await caller.wait_agent()
    room = stack.livekit.rooms.get_room(caller.room.name)
    caller.say(speech("Goodbye."))
    await caller.wait_reply(0)
    session = stack.gemini.sessions[earlier_sessions]  # this room's agent's session
    await caller.leave()

    # the agent hangs up its Gemini session and leaves the room, without waiting for the
    # room's departure timeout
    await session.wait_closed(timeout=15)

    async def agent_left() -> None:
        while agent.identity in room.participants:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(agent_left(), 15)
    assert "Traceback" not in worker.log_tail(400)


async def test_bad_token_is_refused(worker, stack):
    room = rtc.Room()
    bad = caller_token(stack.livekit.api_key, "x" * 40, "room-bad", "mallory", agent_name=None)
    with pytest.raises(rtc.ConnectError):
        await room.connect(stack.livekit.url, bad, rtc.RoomOptions(connect_timeout=5.0))
    expired = caller_token(stack.livekit.api_key, stack.livekit.api_secret, "room-bad", "mallory",
                           agent_name=None, ttl_s=-60)
    with pytest.raises(rtc.ConnectError):
        await room.connect(stack.livekit.url, expired, rtc.RoomOptions(connect_timeout=5.0))
    assert stack.livekit.rooms.get_room("room-bad") is None or not stack.livekit.rooms.get_room("room-bad").participants


async def test_in_a_meeting_the_agent_turns_to_the_next_person(worker, stack, join, speech):
    alice = await asyncio.wait_for(join(identity="alice"), 30)
    await alice.wait_agent()
    bob = await asyncio.wait_for(join(room=alice.room.name, identity="bob"), 30)
    agent = await bob.wait_for(lambda: bob.agent, 10, "bob to see the agent")
    await asyncio.wait_for(alice.leave(), 15)

    # the conversation goes on with bob, who is heard and answered
    await asyncio.sleep(1.0)
    question = speech("Now it is Bob asking the agent something")
    bob.say(question)
    spoken_at = await bob.wait_spoken()
    reply = await bob.wait_reply(spoken_at)
    assert sounds_like(reply, question) >= 0.8

    # and ends when the last person leaves
    room = stack.livekit.rooms.get_room(bob.room.name)
    await asyncio.wait_for(bob.leave(), 15)

    async def agent_left() -> None:
        while agent.identity in room.participants:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(agent_left(), 15)


@pytest.mark.parametrize("kind", [None, "sip"])
async def test_end_call_tool_hangs_up(worker, stack, join, speech, kind):
    """The model calls end_call: the agent says goodbye and leaves. A phone caller is hung up
    (the room is deleted); in a browser or a meeting the others stay in the room."""
    stack.gemini.script.tool_call(1, "end_call", {})
    try:
        caller = await join(kind=kind)
        agent = await caller.wait_agent()
        await caller.wait_for(lambda: "listening" in [s for _, s in caller.agent_states], 30, "the agent to listen")
        earlier = len(stack.gemini.sessions)
        caller.say(speech("Thank you, that is all for today. Goodbye."))
        spoken = await caller.wait_spoken()
        # the call's connection that gets the tool response (a phone agent's own tools may
        # have reconnected the early one)
        def answered_session():
            return next((s for s in stack.gemini.sessions[earlier - 1:]
                         if any(m.kind == "tool_response" for m in s.received)), None)

        await caller.wait_for(answered_session, 20, "the tool's response at Gemini")
        session = answered_session()
        # the framework ran the tool and the agent spoke its goodbye before leaving
        await caller.wait_for(lambda: caller.heard.first_loud(spoken), 20, "the goodbye")
        await caller.wait_for(lambda: agent.identity not in caller.room.remote_participants, 20,
                              "the agent to leave")
        await session.wait_closed(timeout=15)
        room = stack.livekit.rooms.get_room(caller.room.name)
        if kind == "sip":
            await caller.wait_for(lambda: caller.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED,
                                  15, "the phone call to be hung up")
            assert room is None or room.closed
        else:
            await asyncio.sleep(1.0)
            assert caller.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
            assert room is not None and caller.identity in room.participants
    finally:
        stack.gemini.script.reset()


async def test_no_secret_reaches_the_worker_log(worker, stack, join, speech):
    caller = await join()
    await caller.wait_agent()
    caller.say(speech("Is anything secret written down?"))
    await caller.wait_reply(await caller.wait_spoken())
    log = worker.log_tail(10**8)
    assert "starting session" in log  # the log is the worker's and has this call in it
    for name in ("LIVEKIT_API_SECRET", "GOOGLE_API_KEY"):
        assert worker.env[name] and worker.env[name] not in log, name

