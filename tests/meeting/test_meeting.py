"""Several people and the agent in one room, through the local stack with a real worker.

The offline model echoes each turn, so "answered with that person's own words" is
measurable; its transcripts come from script.transcripts, so every line's speaker can be
checked; its proactive audio answers only turns that name the agent (devstack/gemini/
proactive.py), which the meeting's default reply policy (`addressed`) switches on."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from livekit import rtc

from devstack.gemini import proactive

from ..support.audio import resample, speech_similarity, trim_silence
from ..support.caller import RATE, Caller
from ..support.video import VideoTrack, colour
from .conftest import EXTRAS_AGENT

pytestmark = pytest.mark.asyncio(loop_scope="module")


def sounds_like(heard: np.ndarray, said: np.ndarray, heard_rate: int = RATE) -> float:
    return speech_similarity(
        trim_silence(resample(heard, heard_rate, 16000), 16000),
        trim_silence(resample(said, RATE, 16000), 16000),
        16000,
    )


# These short espeak-ng questions score ~0.80 against themselves after one Opus leg (what
# the model heard), 0.77-0.78 after two (the reply a person hears; lower on a saturated
# machine) and 0.62-0.68 against each other (support.audio.speech_similarity).
SAME = 0.72
MARGIN = 0.06


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(bytes(data), np.int16)


async def until(predicate, timeout: float, what: str):
    async def poll():
        while not (value := predicate()):
            await asyncio.sleep(0.05)
        return value

    try:
        return await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def proactive_session(stack, after: int):
    """The Gemini session the agent opened for the meeting (proactive audio in its setup)."""
    return await until(
        lambda: next((s for s in stack.gemini.sessions[after:] if proactive.enabled(s)), None),
        30, "the agent to switch Gemini to proactive audio for the meeting")


async def people_in_meeting(meeting_room, *identities: str) -> list[Caller]:
    callers = []
    for identity in identities:
        c = await meeting_room(identity)
        await c.wait_agent(timeout=60)
        callers.append(c)
    return callers


def final_lines(caller: Caller, text: str):
    return [t for t in caller.transcripts if t.final and t.text == text]


async def test_three_people_are_each_answered_in_their_own_words(worker, stack, meeting_room, speech):
    script = stack.gemini.script
    first = len(stack.gemini.sessions)
    alice, bob, carol = await people_in_meeting(meeting_room, "alice", "bob", "carol")
    session = await proactive_session(stack, first)
    asked = [
        (alice, "Gemini, what is the capital of France?"),
        (bob, "Gemini, how tall is Mount Everest?"),
        (carol, "Gemini, who wrote the play Hamlet?"),
        # then two at once: Alice starts, Bob talks over her
        (alice, "Gemini, what time is it in Tokyo right now?"),
        (bob, "Gemini, please spell the word banana for me."),
    ]
    heard_as = {n: text.replace(",", "").rstrip("?.") for n, (_, text) in enumerate(asked, 1)}
    script.transcripts.update(heard_as)
    questions = [speech(text) for _, text in asked]
    try:
        await asyncio.sleep(0.5)
        # one after another: the model hears each one's question, and they hear the agent
        # answer with their own words (the echo sounds most like their question)
        for n in range(3):
            who = asked[n][0]
            who.say(questions[n])
            reply = await who.wait_reply(await who.wait_spoken(), quiet_s=0.6)
            heard = resample(pcm(session.utterances[n]), 16000, RATE)
            others = [q for i, q in enumerate(questions[:3]) if i != n]
            assert sounds_like(heard, questions[n]) >= SAME, f"turn {n + 1}"
            assert all(sounds_like(heard, questions[n]) - sounds_like(heard, q) >= MARGIN for q in others)
            assert all(sounds_like(reply, questions[n]) - sounds_like(reply, q) >= MARGIN for q in others)

        # two at once: both are heard, one after the other, each as a whole
        alice.say(questions[3])
        await asyncio.sleep(0.5)
        bob.say(questions[4])
        await asyncio.gather(alice.wait_spoken(), bob.wait_spoken())
        await until(lambda: sum(bool(m.content.get("turnComplete")) for m in session.sent) >= 5,
                    40, "the agent to answer both")
        for n in (3, 4):
            said = trim_silence(questions[n], RATE)
            heard = trim_silence(resample(pcm(session.utterances[n]), 16000, RATE), RATE)
            assert sounds_like(heard, questions[n]) >= SAME, f"turn {n + 1} is not {asked[n][0].identity}'s"
            other = questions[7 - n]
            assert sounds_like(heard, questions[n]) - sounds_like(heard, other) >= MARGIN
            # no first words lost: the model heard the whole question (90 %: in the suite's two
            # processes the first speaker's turn twice came out 5 % short, 2.65 of 2.79 s, with
            # the pre-roll at 300 or 500 ms alike; a lost first word is over 10 % of it)
            assert len(heard) >= 0.9 * len(said), (n + 1, len(heard) / RATE, len(said) / RATE)
            # and echoed it: the reply is that person's words
            assert sounds_like(pcm(session.replies[n]), questions[n], 24000) >= SAME

        # every transcript line in the room carries its speaker: people's under their own
        # identity and microphone track, the agent's under the agent
        agent_identity = carol.agent.identity
        for n, (who, _) in enumerate(asked, 1):
            await until(lambda: len(final_lines(carol, heard_as[n])) >= 2, 15, f"turn {n}'s lines")
            lines = final_lines(carol, heard_as[n])
            users = [t for t in lines if t.identity != agent_identity]
            assert [(t.identity, t.track_id) for t in users] == [(who.identity, who.mic_track_sid)], (n, lines)
            assert len([t for t in lines if t.identity == agent_identity]) == 1, (n, lines)

        # the model was told who spoke, in order
        notes = [n for n in proactive.client_notes(session) if n.endswith("is speaking]")]
        assert notes == ["[alice is speaking]", "[bob is speaking]", "[carol is speaking]",
                         "[alice is speaking]", "[bob is speaking]"], notes
        # and who is in the room, with the reply policy
        assert "alice, bob, carol" in session.conversation.system_instruction + " ".join(
            h.get("text") or "" for h in session.conversation.history if h.get("role") == "model")
    finally:
        script.reset()


async def test_addressed_policy_chat_join_and_leave(worker, stack, meeting_room, speech):
    script = stack.gemini.script
    first = len(stack.gemini.sessions)
    alice, bob = await people_in_meeting(meeting_room, "alice", "bob")
    session = await proactive_session(stack, first)
    # alone, Alice had today's one-to-one call: no proactive audio; with Bob, the agent
    # reconnected with it, on the API version the service serves it on
    assert not proactive.enabled(stack.gemini.sessions[first])
    assert session.api_version == "v1alpha"
    remark = "I think we should ship the release on Friday"
    question = "Gemini do you agree with that"
    script.transcripts.update({1: remark, 2: question})
    chat_replies: list[str] = []

    def on_chat(reader: rtc.TextStreamReader, identity: str) -> None:
        async def read():
            if identity == alice.agent.identity:
                chat_replies.append(await reader.read_all())
        asyncio.get_running_loop().create_task(read())

    alice.room.register_text_stream_handler("lk.chat", on_chat)
    try:
        await asyncio.sleep(0.5)
        # a remark between people: the model hears it (and the room sees it, as Bob's), no answer
        bob.say(speech("I think we should ship the release on Friday."))
        spoken = await bob.wait_spoken()
        await until(lambda: remark in session.declined, 15, "the model to take the remark")
        await until(lambda: final_lines(alice, remark), 10, "the remark's transcript")
        assert [t.identity for t in final_lines(alice, remark)] == ["bob"]
        await asyncio.sleep(1.5)  # an answer would have started well within this
        assert alice.heard.first_loud(spoken) is None, "the agent spoke without being addressed"
        assert bob.heard.first_loud(spoken) is None

        # a question that names the agent is answered
        alice.say(speech("Gemini, do you agree with that?"))
        reply = await bob.wait_reply(await alice.wait_spoken())
        assert sounds_like(reply, speech("Gemini, do you agree with that?")) >= SAME

        # a late joiner: the model is told, and her typed chat reaches it with her name
        carol = await meeting_room("carol")
        await carol.wait_agent(timeout=60)
        await until(lambda: "[carol joined the meeting]" in proactive.client_notes(session), 15,
                    "the join to reach the model")
        await carol.room.local_participant.send_text("Gemini, what is two plus two?", topic="lk.chat")
        await until(lambda: any("carol (chat): Gemini, what is two plus two?" in str(m.body)
                                for m in session.received if m.kind == "client_content"),
                    15, "Carol's chat to reach the model with her name")
        # the answer goes back to the room's chat
        await until(lambda: chat_replies, 20, "the agent's answer in the room's chat")
        assert "two plus two" in chat_replies[0]

        # leaving reaches the model; the last person leaving ends the job
        await bob.leave()
        await until(lambda: any("[bob left the meeting]" in n
                                for s in stack.gemini.sessions[first:] for n in proactive.client_notes(s)),
                    15, "the leave to reach the model")
        room = stack.livekit.rooms.get_room(alice.room.name)
        agent_identity = alice.agent.identity
        await carol.leave()
        await alice.leave()
        for s in stack.gemini.sessions[first:]:
            await s.wait_closed(timeout=15)
        await until(lambda: agent_identity not in room.participants, 15, "the agent to leave")
        assert "Traceback" not in worker.log_tail(400)
    finally:
        script.reset()


class ModelsView:
    """The colours of the video frames one Gemini session received, decoded once each."""

    def __init__(self, session) -> None:
        self.session, self.colours = session, []

    def seen(self) -> list[str]:
        frames = self.session.video_frames
        self.colours += [colour(f.data) for f in frames[len(self.colours):]]
        return self.colours

    async def next_frames(self, name: str, n: int = 3, timeout: float = 30) -> list[str]:
        """Wait for a frame of colour `name` from now on, then return the `n` after it."""
        start = len(self.seen())
        await until(lambda: name in self.seen()[start:], timeout,
                    f"the model to see {name} (saw {self.seen()[start:]})")
        first = self.seen().index(name, start)
        await until(lambda: len(self.seen()) > first + n, timeout, f"{n} more frames")
        return self.seen()[first + 1:first + 1 + n]


async def test_video_follows_screen_then_speaker_and_late_joiners_are_greeted(
        extras_worker, stack, meeting_room, speech):
    """Video on: the model sees whoever shares their screen, else the current speaker's
    camera. A person joining the meeting under way is greeted by name; join and leave reach
    the model."""
    script = stack.gemini.script
    first = len(stack.gemini.sessions)
    screen = camera_a = camera_b = None
    alice = await meeting_room("alice", EXTRAS_AGENT)
    bob = await meeting_room("bob", EXTRAS_AGENT)
    # they come with their video on, all three tracks published at once
    screen = await VideoTrack(alice, rtc.TrackSource.SOURCE_SCREENSHARE, (0, 0, 230), fps=5).start()
    camera_a = await VideoTrack(alice, rtc.TrackSource.SOURCE_CAMERA, (0, 200, 0), fps=5).start()
    camera_b = await VideoTrack(bob, rtc.TrackSource.SOURCE_CAMERA, (230, 0, 0), fps=5).start()
    await alice.wait_agent(timeout=60)
    await bob.wait_agent(timeout=60)
    session = await proactive_session(stack, first)
    model = ModelsView(session)
    try:
        await model.next_frames("blue", n=1)
        # Alice shares her screen and Bob speaks: the model sees Alice's screen
        taken = len(model.seen())
        bob.say(speech("Here are the numbers."))
        await until(lambda: "[bob is speaking]" in proactive.client_notes(session), 15, "Bob to take the floor")
        assert set(await model.next_frames("blue", n=2)) == {"blue"}, "not Alice's screen while Bob speaks"
        assert set(model.seen()[taken:]) == {"blue"}, model.seen()[taken:]
        await bob.wait_spoken()

        # no screen shared: the current speaker's camera, and it follows the speaker
        await screen.stop()
        screen = None
        alice.say(speech("They look good to me."))
        assert set(await model.next_frames("green", n=2)) == {"green"}, "not Alice's camera while she speaks"
        await alice.wait_spoken()
        bob.say(speech("Thank you, Alice."))
        assert set(await model.next_frames("red", n=2)) == {"red"}, "not Bob's camera while he speaks"
        await bob.wait_spoken()

        # a late joiner: the model is told, asked to greet her by name, and she hears it
        carol = await meeting_room("carol", EXTRAS_AGENT)
        joined_at = time.perf_counter()
        await carol.wait_agent(timeout=60)
        await until(lambda: "[carol joined the meeting]" in proactive.client_notes(session), 15,
                    "the join to reach the model")
        await until(lambda: any("carol just joined the meeting" in str(m.body)
                                for m in session.received if m.kind == "client_content"),
                    15, "the model to be asked to greet Carol")
        await until(lambda: carol.heard.first_loud(joined_at), 30, "Carol to hear the greeting")
        await carol.leave()
        await until(lambda: "[carol left the meeting]" in proactive.client_notes(session), 15,
                    "the leave to reach the model")
    finally:
        for track in (screen, camera_a, camera_b):
            if track is not None:
                await track.stop()
        script.reset()
