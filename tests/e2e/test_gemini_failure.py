"""When Gemini cannot be reached for good, the caller is told and the call ends: through the
local LiveKit server with a real worker process. Never a silent open line."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import pytest_asyncio
from livekit import rtc

from agents.settings import load_settings

from ..support.audio import resample, speech_similarity, trim_silence
from ..support.caller import RATE
from .conftest import HEADSET_AGENT_ENV

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGENT = "fragile-agent"
APOLOGY = load_settings().connection.apology_text


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker({
        **HEADSET_AGENT_ENV,
        "AGENT_AGENT__NAME": AGENT,
        "AGENT_CONNECTION__SETUP_TIMEOUT_S": "1",
        "AGENT_CONNECTION__RECONNECT_WITHIN_S": "3",
    })
    yield w
    await w.stop()


def collect_chat(caller) -> list[str]:
    messages: list[str] = []

    def on_chat(reader: rtc.TextStreamReader, identity: str) -> None:
        async def read() -> None:
            messages.append(await reader.read_all())

        asyncio.ensure_future(read())

    caller.room.register_text_stream_handler("lk.chat", on_chat)
    return messages


def sounds_like(heard, said) -> float:
    return speech_similarity(trim_silence(resample(heard, RATE, 16000), 16000),
                             trim_silence(resample(said, RATE, 16000), 16000), 16000)


def latest_model_reply(gemini) -> np.ndarray:
    """The (offline) model's most recent reply over all its sessions, as 48 kHz samples."""
    replies = [r for session in gemini.sessions for r in session.replies if len(r)]
    return resample(np.frombuffer(bytes(replies[-1]), np.int16), 24000, RATE)


def last_utterance(pcm: np.ndarray, gap_s: float = 0.3) -> np.ndarray:
    """The audio after the last pause of `gap_s` or more (a cut answer, then the whole one)."""
    frame = RATE // 100
    loud = [np.abs(pcm[i:i + frame]).max(initial=0) >= 500 for i in range(0, len(pcm), frame)]
    start, quiet = 0, 0
    for i, is_loud in enumerate(loud):
        if is_loud:
            if quiet * 0.01 >= gap_s:
                start = i
            quiet = 0
        else:
            quiet += 1
    return pcm[start * frame:]


def loud_seconds(caller, since: float) -> float:
    return sum(len(a) for t, a in caller.heard.frames if t >= since and len(a) and abs(a).max() >= 500) / RATE


async def test_a_phone_caller_hears_the_apology_and_is_hung_up(worker, stack, join, speech):
    try:
        caller = await join(agent_name=AGENT, kind="sip")
        chat = collect_chat(caller)
        agent = await caller.wait_agent()
        await caller.wait_for(lambda: "listening" in [s for _, s in caller.agent_states], 30, "the agent to listen")
        # Gemini goes away and never answers a setup again
        stack.gemini.script.stall_setup = True
        since = time.perf_counter()
        await stack.gemini.close_all(1011, "Internal error encountered.")

        await caller.wait_for(lambda: APOLOGY in chat, 30, "the apology in the room's chat")
        assert agent.attributes.get("agent.unavailable") == "stall"
        # spoken: the apology is seconds of the agent's voice after the fault
        await caller.wait_for(lambda: loud_seconds(caller, since) >= 3.0, 30, "the spoken apology")
        await caller.wait_for(lambda: caller.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED,
                              30, "the phone call to be hung up")
        room = stack.livekit.rooms.get_room(caller.room.name)
        assert room is None or room.closed
        assert "Gemini Live unavailable" in worker.log_tail(400)
    finally:
        stack.gemini.script.reset()


async def test_an_unknown_model_is_told_to_the_browser_caller_who_sees_the_agent_leave(stack, join):
    w = await stack.start_worker({**HEADSET_AGENT_ENV, "AGENT_AGENT__NAME": "misconfigured-agent",
                                  "AGENT_MODEL__NAME": "gemini-no-such-model"})
    try:
        caller = await join(agent_name="misconfigured-agent")
        chat = collect_chat(caller)
        agent = await caller.wait_agent()
        await caller.wait_for(lambda: APOLOGY in chat, 30, "the apology in the room's chat")
        await caller.wait_for(lambda: agent.identity not in caller.room.remote_participants, 30,
                              "the agent to leave")
        assert caller.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        log = w.log_tail(400)
        assert "close_1008" in log and "gemini-no-such-model" in log
    finally:
        await w.stop()


async def test_in_a_room_a_go_away_and_a_1011_mid_reply_leave_every_answer_whole(worker, stack, join, speech):
    """Through a real worker and WebRTC: the caller hears each whole answer, once."""
    stack.gemini.script.fault(turn=1, during="reply", kind="go_away", after_s=0.8, time_left="5s")
    stack.gemini.script.fault(turn=2, during="reply", kind="close", after_s=0.8, code=1011)
    try:
        caller = await join(agent_name=AGENT)
        await caller.wait_agent()
        for n, text in enumerate(["Tell me about the weather tomorrow in Seoul and in Busan.",
                                  "And what about the trains between the two cities?"]):
            question = speech(text)
            caller.say(question)
            spoken = await caller.wait_spoken()
            # the whole answer: after a fault mid-reply the question is answered again in full
            heard = await caller.wait_reply(spoken, quiet_s=3.0, timeout=40)
            # the model's latest reply is the whole question echoed (nothing of it lost)...
            reply = latest_model_reply(stack.gemini)
            assert sounds_like(reply, question) >= 0.8, f"answer {n + 1} does not echo the whole question"
            # ...and it closes what the caller heard (a cut answer may come just before it, with
            # or without a pause between them; the jitter buffer may play a burst faster)
            answer = last_utterance(heard)[-int(len(reply) * 1.1):]
            assert sounds_like(answer, reply) >= 0.8, f"answer {n + 1} was not whole"
        assert [e.kind for e in stack.gemini.fault_log][-2:] == ["go_away", "close"]
    finally:
        stack.gemini.script.reset()
