"""Connection faults of the offline Gemini Live server, seen through the real google-genai client.

Each fault must look to the client as it would from the service: a goAway with its
timeLeft and then a close at the deadline, a close frame with its code, a connection
that ends with no close frame (1006), or a connection that stays open and says nothing.
Resumption must behave like the service's: no handle while the model answers,
lastConsumedClientMessageIndex for transparent sessions, handles that expire.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Callable

import numpy as np
import pytest
import websockets
from google import genai
from google.genai import errors, types

from devstack.gemini import OfflineGeminiServer, RandomFaults
from devstack.gemini.audio import float_to_pcm, pcm_to_float, synth_speech

from .test_offline_gemini import (  # noqa: F401  (fixtures: server, client, speech)
    AUDIO_CONFIG,
    CHUNK,
    MODEL,
    TEXT_CONFIG,
    assert_echo,
    audio_of,
    client,
    espeak16k,
    input_utterances,
    pcm16k,
    server,
    silence,
    speech,
)

@pytest.fixture
def vertex(server: OfflineGeminiServer, client: genai.Client) -> genai.Client:
    """A Vertex AI express-mode client (API key): google-genai allows transparent
    resumption only there (it refuses `transparent` for the Gemini Developer API)."""
    return genai.Client(vertexai=True, api_key=server.api_key, http_options=types.HttpOptions(base_url=server.base_url))


TOOLS = [{"function_declarations": [{"name": "lookup", "description": "find an order"}]}]


class Inbox:
    """Everything the client receives, read in the background: messages, then the error
    that ended the connection (an APIError carrying the close code)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.msgs: list[types.LiveServerMessage] = []
        self.arrivals: list[float] = []
        self.error: errors.APIError | None = None
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                async for m in self.session.receive():
                    self.msgs.append(m)
                    self.arrivals.append(time.monotonic())
                    self._new.set()
        except errors.APIError as e:
            self.error = e
            self._new.set()

    async def until(self, pred: Callable[[types.LiveServerMessage], bool], timeout: float = 10.0) -> types.LiveServerMessage:
        async def wait() -> types.LiveServerMessage:
            seen = 0
            while True:
                for m in self.msgs[seen:]:
                    if pred(m):
                        return m
                seen = len(self.msgs)
                if self.error is not None:
                    raise self.error
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def closed(self, timeout: float = 10.0) -> errors.APIError:
        await asyncio.wait_for(self._task, timeout)
        assert self.error is not None
        return self.error

    async def quiet(self, seconds: float) -> None:
        """Nothing at all arrives for `seconds` (and the connection stays open)."""
        count = len(self.msgs)
        await asyncio.sleep(seconds)
        assert len(self.msgs) == count, [m for m in self.msgs[count:]]
        assert self.error is None, self.error

    def index(self, pred: Callable[[types.LiveServerMessage], bool]) -> int | None:
        return next((i for i, m in enumerate(self.msgs) if pred(m)), None)

    def stop(self) -> None:
        self._task.cancel()


def is_turn_complete(m: types.LiveServerMessage) -> bool:
    return bool(m.server_content and m.server_content.turn_complete)


def is_handle(m: types.LiveServerMessage) -> bool:
    return bool(m.session_resumption_update and m.session_resumption_update.resumable)


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def tone(seconds: float, freq: float = 330.0, rate: int = 24_000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return float_to_pcm(0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32))


# ---- every kind at every moment of a turn --------------------------------------------

REPLY_S = 0.5


@pytest.mark.parametrize("during", ["reply", "tool_call", "after_turn"])
@pytest.mark.parametrize("kind", ["go_away", "close", "drop", "stall"])
async def test_each_fault_kind_at_each_moment_of_a_turn(server, client, kind, during):
    reply = tone(REPLY_S)
    server.script.reply(1, text="the answer", audio=reply)
    if during == "tool_call":
        server.script.tool_call(1, "lookup", {"order": "A17"})
    after_s = {"reply": 0.3, "tool_call": 0.2, "after_turn": 0.0}[during]
    server.script.fault(turn=1, during=during, kind=kind, after_s=after_s, time_left="1s", code=1011)
    config = dict(AUDIO_CONFIG, tools=TOOLS) if during == "tool_call" else AUDIO_CONFIG

    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        inbox = Inbox(session)
        await session.send_realtime_input(text="what is the answer?")
        if during == "tool_call":
            call = (await inbox.until(lambda m: m.tool_call is not None)).tool_call.function_calls[0]
            await asyncio.sleep(0.3)  # the tool is slow: the fault fires 0.2 s in, before the response
            if kind in ("go_away", "stall"):  # the connection is still up
                await session.send_tool_response(function_responses=types.FunctionResponse(
                    id=call.id, name=call.name, response={"output": "found"}))
        if kind == "go_away":
            away = await inbox.until(lambda m: m.go_away is not None)
            assert away.go_away.time_left == "1s"
            await inbox.until(is_turn_complete)  # the reply plays to its end
            closed = await inbox.closed()
            assert closed.code == 1000  # closed by the server at the deadline
            went_away = inbox.arrivals[inbox.index(lambda m: m.go_away is not None)]
            assert time.monotonic() - went_away >= 1.0 - 0.05
        elif kind in ("close", "drop"):
            closed = await inbox.closed()
            assert closed.code == (1011 if kind == "close" else 1006)
        else:  # stall: the socket stays open and nothing more comes, whatever the client sends
            await eventually(lambda: live.stalled)
            sent = len(live.sent)  # setupComplete and what went out before the stall
            await eventually(lambda: len(inbox.msgs) == sent - 1)
            await inbox.quiet(0.4)
            await session.send_realtime_input(text="hello? are you there?")
            await live.wait_for(lambda m: m.kind == "text" and m.body == "hello? are you there?")
            await inbox.quiet(0.4)
            assert not live.closed.is_set() and len(live.sent) == sent
        inbox.stop()

    got = audio_of(inbox.msgs)
    completed = inbox.index(is_turn_complete) is not None
    if during == "after_turn" or kind == "go_away":
        assert completed and got == reply  # the whole reply
    elif during == "reply":
        assert not completed and 0 < len(got) < len(reply)
        # the fault fired 0.3 s of audio into the reply (chunks of 40 ms); an abort may
        # also lose what was still in the server's send buffer
        assert len(got) / 2 / 24_000 <= 0.3 + 0.04 + 0.001
        if kind != "drop":
            assert 0.3 <= len(got) / 2 / 24_000
    else:  # tool_call: nothing of the answer was spoken
        assert not completed and not got
        assert any(m.tool_call for m in inbox.msgs)

    (event,) = server.fault_log
    assert (event.kind, event.during, event.turn, event.session, event.source) == (kind, during, 1, 1, "script")
    (turn,) = server.conversation(live.conversation.id).turns
    assert turn.n == 1 and turn.transcript == "what is the answer?"
    if during == "after_turn" or kind == "go_away":
        assert turn.outcome == "completed"
    else:
        assert (turn.outcome, turn.fault) == ("cut", kind)
    assert not server.script.faults.pending()  # spent


async def test_tool_call_fault_fires_when_the_response_arrives(server, client):
    server.script.tool_call(1, "lookup", {"order": "A17"})
    server.script.fault(turn=1, during="tool_call", kind="close", after_s=None, code=1011)
    async with client.aio.live.connect(model=MODEL, config=dict(AUDIO_CONFIG, tools=TOOLS)) as session:
        live = await server.wait_for_session(1)
        inbox = Inbox(session)
        await session.send_realtime_input(text="where is my order?")
        call = (await inbox.until(lambda m: m.tool_call is not None)).tool_call.function_calls[0]
        await asyncio.sleep(0.3)  # no response yet: nothing happens
        assert inbox.error is None and server.fault_log == []
        await session.send_tool_response(function_responses=types.FunctionResponse(
            id=call.id, name=call.name, response={"output": "found"}))
        assert (await inbox.closed()).code == 1011
    assert [m.kind for m in live.received][-1] == "tool_response"  # taken in, then the close
    assert not audio_of(inbox.msgs)


# ---- setup, refusals, lifetime --------------------------------------------------------

@pytest.mark.parametrize("kind", ["close", "drop", "stall"])
async def test_setup_faults_hit_the_next_connections_then_stop(server, client, kind):
    server.script.refuse_connections(1, status=503)
    if kind == "stall":
        server.script.stall_setups(2)
    else:
        server.script.fail_setups(2, kind=kind, code=1011)

    async def connect() -> None:
        async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG):
            pass

    with pytest.raises(websockets.InvalidStatus) as refused:  # the upgrade is refused
        await connect()
    assert refused.value.response.status_code == 503
    for attempt in range(2):
        if kind == "stall":
            with pytest.raises(asyncio.TimeoutError):  # setupComplete never comes
                await asyncio.wait_for(connect(), 0.5)
        else:
            with pytest.raises(errors.APIError) as info:
                await connect()
            assert info.value.code == (1011 if kind == "close" else 1006)
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="third time lucky")
        await inbox.until(is_turn_complete)
        inbox.stop()
    assert [r.status for r in server.refused] == [503]
    assert [(e.kind, e.during, e.session) for e in server.fault_log] == [(kind, "setup", 1), (kind, "setup", 2)]
    assert [[m.kind for m in s.sent][:1] for s in server.sessions] == [[], [], ["setupComplete"]]


async def test_connection_lifetime_ends_with_go_away_then_close(server, client):
    server.connection_lifetime_s, server.go_away_lead_s = 1.2, 0.8
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        live = await server.wait_for_session(1)
        inbox = Inbox(session)
        away = await inbox.until(lambda m: m.go_away is not None)
        assert away.go_away.time_left == "0.8s"
        assert (await inbox.closed()).code == 1000
    assert live.sent[0].kind == "setupComplete"
    assert live.sent[-1].kind == "goAway"
    assert time.monotonic() - live.connected_at >= 1.2
    assert [(e.kind, e.source, e.time_left) for e in server.fault_log] == [("go_away", "lifetime", "0.8s")]


# ---- resumption -------------------------------------------------------------------------

async def test_transparent_resumption_index_counts_consumed_messages(server, vertex):
    server.resumption_update_interval_s = 0.1
    config = dict(TEXT_CONFIG, session_resumption={"transparent": True})
    quiet = float_to_pcm(silence(0.05))
    async with vertex.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        inbox = Inbox(session)
        for _ in range(6):  # messages 1..6 (setup is 0)
            await session.send_realtime_input(audio=types.Blob(data=quiet, mime_type="audio/pcm;rate=16000"))
        first = await inbox.until(lambda m: is_handle(m) and m.session_resumption_update.last_consumed_client_message_index == 6)
        await session.send_realtime_input(text="a question")  # message 7
        await inbox.until(lambda m: is_handle(m) and m.session_resumption_update.last_consumed_client_message_index == 7)
        inbox.stop()

    updates = [m.session_resumption_update for m in inbox.msgs if m.session_resumption_update]
    indices = [u.last_consumed_client_message_index for u in updates]
    assert all(i is not None for i in indices) and indices == sorted(indices)
    # while the model answered: no handle, and the index of the last handle
    busy = [u for u in updates if not u.resumable]
    assert busy and all(u.new_handle is None and u.last_consumed_client_message_index == 6 for u in busy)
    assert [m.index for m in live.received] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert first.session_resumption_update.new_handle in live.handles


async def test_resume_after_a_cut_reply_replays_unconsumed_audio_and_continues_the_conversation(server, vertex, speech):
    server.resumption_update_interval_s = 0.1
    server.script.fault(turn=2, during="reply", after_s=0.3, kind="close", code=1011)
    config = dict(AUDIO_CONFIG, session_resumption={"transparent": True})
    first, second = pcm16k(speech["stop"], 0.7), pcm16k(speech["hello"], 0.7)
    sent: list[bytes] = []  # what the client sent after setup: message i is sent[i - 1]

    async def say(session: Any, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK):
            sent.append(pcm[i : i + CHUNK])
            await session.send_realtime_input(audio=types.Blob(data=sent[-1], mime_type="audio/pcm;rate=16000"))

    async with vertex.aio.live.connect(model=MODEL, config=config) as session:
        inbox = Inbox(session)
        await say(session, first)
        await inbox.until(is_turn_complete)
        await say(session, second)  # a burst: the fault cuts its answer
        assert (await inbox.closed()).code == 1011
    handle_msg = [m for m in inbox.msgs if is_handle(m)][-1].session_resumption_update
    consumed = handle_msg.last_consumed_client_message_index
    assert consumed < len(sent)  # the last handle predates part of the second question

    resumed = dict(AUDIO_CONFIG, session_resumption={"handle": handle_msg.new_handle, "transparent": True})
    async with vertex.aio.live.connect(model=MODEL, config=resumed) as session:
        inbox = Inbox(session)
        for pcm in sent[consumed:]:  # replay what the old connection had not taken in
            await session.send_realtime_input(audio=types.Blob(data=pcm, mime_type="audio/pcm;rate=16000"))
        await inbox.until(is_turn_complete)
        inbox.stop()

    old, new = server.sessions
    assert new.resumed_from == handle_msg.new_handle and new.resumed_state.turn_count == 1
    assert new.conversation.id == old.conversation.id
    assert [n for n, _ in input_utterances(inbox.msgs)] == [2]  # numbering continues
    log = server.conversation(old.conversation.id)
    assert log.sessions == [1, 2]
    assert [(t.n, t.session, t.outcome, t.fault) for t in log.turns] == [
        (1, 1, "completed", None), (2, 1, "cut", "close"), (2, 2, "completed", None)]
    # the question heard again on the new connection is exactly the one that was cut
    assert log.turns[2].audio == log.turns[1].audio
    assert_echo(speech["hello"], audio_of(inbox.msgs), log.turns[2].audio)
    assert [h["role"] for h in new.conversation.history][:2] == ["user", "model"]  # turn 1 kept


async def test_expired_and_unknown_handles_are_refused_then_history_seeds_a_fresh_session(server, client):
    server.handle_ttl_s = 0.3
    config = dict(TEXT_CONFIG, session_resumption={})
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="Remember the number 42")
        handle = (await inbox.until(is_handle)).session_resumption_update.new_handle
        inbox.stop()
    await server.sessions[0].wait_closed()
    await asyncio.sleep(max(0.0, server.handles.expires_at(handle) - time.monotonic()) + 0.05)
    for stale, reason in ((handle, "expired"), ("offline-resume-unknown", "Invalid")):
        with pytest.raises(errors.APIError) as info:
            async with client.aio.live.connect(model=MODEL, config=dict(TEXT_CONFIG, session_resumption={"handle": stale})):
                pass
        assert info.value.code == 1007 and reason in str(info.value)
    assert [h for h, _ in server.handles.refused] == [handle, "offline-resume-unknown"]

    # a new session given the conversation so far as history
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = server.sessions[-1]
        await session.send_client_content(turns=[
            types.Content(role="user", parts=[types.Part(text="Remember the number 42")]),
            types.Content(role="model", parts=[types.Part(text="You said: Remember the number 42")]),
        ], turn_complete=False)
        await live.wait_for(lambda m: m.kind == "client_content")
    assert live.resumed_from is None and live.conversation.id != server.sessions[0].conversation.id
    assert live.client_history == [{"role": "user", "text": "Remember the number 42"},
                                   {"role": "model", "text": "You said: Remember the number 42"}]


# ---- activity detection in audio time ---------------------------------------------------

async def test_a_burst_of_two_utterances_is_two_turns(server, client, tmp_path):
    """Audio replayed after a reconnect comes faster than real time: turns are judged by
    the audio's own clock, so 1 s of silence between two utterances still ends the first."""
    first, second = espeak16k("Hello there", tmp_path), espeak16k("how are you today", tmp_path)
    pcm = float_to_pcm(np.concatenate([silence(0.3), first, silence(1.0), second, silence(0.8)]))
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        live = await server.wait_for_session(1)
        inbox = Inbox(session)
        t0 = time.monotonic()
        for i in range(0, len(pcm), CHUNK):  # as fast as the socket takes it
            await session.send_realtime_input(audio=types.Blob(data=pcm[i : i + CHUNK], mime_type="audio/pcm;rate=16000"))
        burst_s = time.monotonic() - t0
        await inbox.until(lambda m: is_turn_complete(m) and len(input_utterances(inbox.msgs)) == 2)
        inbox.stop()
    assert burst_s < len(pcm) / 2 / 16_000 / 2  # it really was a burst
    heard = input_utterances(inbox.msgs)
    assert [n for n, _ in heard] == [1, 2]
    for (_, secs), words in zip(heard, (first, second)):
        assert 0 <= secs - len(words) / 16_000 <= 0.2  # each turn holds its words, no more
    turns = live.conversation_log.turns
    assert [t.n for t in turns] == [1, 2] and turns[1].outcome == "completed"
    last = inbox.msgs[inbox.index(lambda m: bool(input_utterances([m])) and input_utterances([m])[0][0] == 2):]
    assert_echo(second, audio_of(last), turns[1].audio)


# ---- random faults --------------------------------------------------------------------

def test_random_fault_plan_is_reproducible_from_its_seed():
    a, b, c = RandomFaults(seed=5), RandomFaults(seed=5), RandomFaults(seed=6)
    plan = [(f.kind, f.during, f.after_s, f.code, f.time_left) for f in a.planned(30)]
    assert plan == [(f.kind, f.during, f.after_s, f.code, f.time_left) for f in b.planned(30)]
    assert plan != [(f.kind, f.during, f.after_s, f.code, f.time_left) for f in c.planned(30)]
    kinds = {f.kind for f in a.planned(30)}
    assert kinds == {"go_away", "close", "drop", "stall"}
    assert all(f.kind != "go_away" for f in a.planned(30) if f.during == "setup")
    with pytest.raises(ValueError, match="not one of"):
        RandomFaults(kinds=["explode"])


async def test_random_faults_fire_across_reconnects_as_planned(server, client, tmp_path):
    server.fault_log_path = tmp_path / "faults.jsonl"
    random = server.random_faults(seed=3, mean_interval_s=0.2, kinds=("close", "drop"), moments=("after_turn",),
                                  close_codes=(1011, 1000))
    codes: list[int] = []
    while random.fired < 3:
        async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            inbox = Inbox(session)
            try:
                while True:
                    await session.send_realtime_input(text="still there?")
                    await inbox.until(is_turn_complete)
                    await asyncio.sleep(0.05)
            except (errors.APIError, websockets.ConnectionClosed):
                codes.append((await inbox.closed()).code)
    planned = random.planned(3)
    fired = [e for e in server.fault_log if e.source == "random"]
    assert [(e.kind, e.code) for e in fired] == [(f.kind, f.code if f.kind == "close" else None) for f in planned]
    assert codes == [f.code if f.kind == "close" else 1006 for f in planned]
    assert all(e.during == "after_turn" for e in fired)
    logged = [json.loads(line) for line in server.fault_log_path.read_text().splitlines()]
    assert [(e["kind"], e["session"]) for e in logged] == [(e.kind, e.session) for e in server.fault_log]
    summary = server.summary()
    assert len(summary["conversations"]) == len(server.sessions) and len(summary["faults"]) == len(logged)
