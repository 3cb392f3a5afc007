"""The offline Gemini Live server, driven by the real google-genai client.

The client reaches the server only through google-genai's own environment variables
(GOOGLE_GEMINI_BASE_URL, SSL_CERT_FILE, GOOGLE_API_KEY), as the product does. Raw
websockets are used only where the real client cannot produce the input (malformed
frames, a missing API key).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import ssl
import subprocess
import time
import wave
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import pytest
import websockets
from google import genai
from google.genai import errors, types

from devstack.gemini import OfflineGeminiServer
from devstack.gemini.audio import float_to_pcm, pcm_to_float, resample, rms_dbfs, synth_speech
from devstack.gemini.vad import FRAME_MS

from ..support import audio as support_audio

MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"
AUDIO_CONFIG = {
    "response_modalities": ["AUDIO"],
    "input_audio_transcription": {},
    "output_audio_transcription": {},
}
TEXT_CONFIG = {"response_modalities": ["TEXT"], "input_audio_transcription": {}}
CHUNK = 1600  # 50 ms at 16 kHz, 16-bit: what the livekit plugin sends


# ---- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Two short spoken phrases at 16 kHz (float), made with espeak-ng."""
    assert shutil.which("espeak-ng"), "espeak-ng is required to synthesise test speech"
    out: dict[str, np.ndarray] = {}
    for name, text in {"hello": "Hello there, friend.", "stop": "Wait, stop."}.items():
        path = tmp_path_factory.mktemp("speech") / f"{name}.wav"
        subprocess.run(["espeak-ng", "-s", "190", "-w", str(path), text], check=True)
        with wave.open(str(path)) as w:
            x = pcm_to_float(w.readframes(w.getnframes()))
            out[name] = resample(x, w.getframerate(), 16_000)
    return out


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OfflineGeminiServer]:
    async with OfflineGeminiServer(host="127.0.0.1", port=0, cert_dir=tmp_path) as srv:
        yield srv


@pytest.fixture
def client(server: OfflineGeminiServer, monkeypatch: pytest.MonkeyPatch) -> genai.Client:
    """A genai Client configured exclusively through the environment."""
    for var in ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    for key, value in server.client_env().items():
        monkeypatch.setenv(key, value)
    return genai.Client()  # SSL_CERT_FILE is read here


# ---- helpers -------------------------------------------------------------------------

def pcm16k(x: np.ndarray, trailing_silence_s: float = 0.8) -> bytes:
    return float_to_pcm(np.concatenate([x, np.zeros(int(trailing_silence_s * 16_000), np.float32)]))


async def send_audio(session: Any, pcm: bytes, realtime: bool = False) -> None:
    """Send 50 ms chunks; realtime=True paces them at 20 a second, as the plugin does."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for n, i in enumerate(range(0, len(pcm), CHUNK)):
        if realtime and (delay := t0 + n * CHUNK / 32_000 - loop.time()) > 0:
            await asyncio.sleep(delay)
        await session.send_realtime_input(audio=types.Blob(data=pcm[i : i + CHUNK], mime_type="audio/pcm;rate=16000"))


async def receive_until(session: Any, pred: Callable[[types.LiveServerMessage], bool],
                        timeout: float = 15.0, arrivals: list[float] | None = None) -> list[types.LiveServerMessage]:
    """Every message up to and including the first that matches pred (across turns).

    arrivals, when given, gets the time.monotonic() at which each message arrived."""
    got: list[types.LiveServerMessage] = []

    async def run() -> list[types.LiveServerMessage]:
        while True:
            async for msg in session.receive():
                if arrivals is not None:
                    arrivals.append(time.monotonic())
                got.append(msg)
                if pred(msg):
                    return got

    return await asyncio.wait_for(run(), timeout)


def turn_complete(msg: types.LiveServerMessage) -> bool:
    return bool(msg.server_content and msg.server_content.turn_complete)


def audio_of(msgs: list[types.LiveServerMessage]) -> bytes:
    return b"".join(m.data for m in msgs if m.data)


def text_of(msgs: list[types.LiveServerMessage], field: str) -> str:
    out = []
    for m in msgs:
        t = getattr(m.server_content, field, None) if m.server_content else None
        if t and t.text:
            out.append(t.text)
    return "".join(out)


def best_correlation(reference: np.ndarray, other: np.ndarray) -> float:
    """Pearson correlation at the best alignment (both at the same rate)."""
    cc = np.correlate(other, reference, "full")
    lag = int(cc.argmax()) - (len(reference) - 1)
    a, b = reference[max(-lag, 0) :], other[max(lag, 0) :]
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def sound_duration(x: np.ndarray, rate: int = 16_000) -> float:
    """Seconds from the first to the last 10 ms of sound within 40 dB of the peak (any level)."""
    peak = float(np.abs(x).max()) if len(x) else 0.0
    pcm = np.frombuffer(float_to_pcm(x * (0.5 / peak)), np.int16) if peak else np.zeros(0, np.int16)
    return len(support_audio.trim_silence(pcm, rate, threshold=0.005)) / rate


def assert_echo(reference: np.ndarray, reply_pcm24k: bytes, utterance_pcm16k: bytes | None = None,
                tolerance_s: float = 0.02) -> None:
    """The reply is the whole reference: the same waveform where they overlap (all that
    best_correlation looks at), as much sound as the reference holds, and, given the
    utterance the server detected, exactly its length."""
    reply = resample(pcm_to_float(reply_pcm24k), 24_000, 16_000)
    assert best_correlation(reference, reply) >= 0.9
    expected, got = sound_duration(reference), sound_duration(reply)
    assert expected > 0.3, "the reference holds no speech"
    assert abs(got - expected) <= tolerance_s, f"echo holds {got:.3f} s of sound, the utterance {expected:.3f} s"
    if utterance_pcm16k is not None:
        assert len(reply_pcm24k) // 2 == len(resample(pcm_to_float(utterance_pcm16k), 16_000, 24_000))


def input_utterances(msgs: list[types.LiveServerMessage]) -> list[tuple[int, float]]:
    """(turn number, seconds) of each placeholder inputTranscription "utterance N (D.DD s)"."""
    out = []
    for m in msgs:
        t = m.server_content.input_transcription if m.server_content else None
        if t and t.text:
            match = re.fullmatch(r"utterance (\d+) \((\d+\.\d+) s\)", t.text)
            assert match, t.text
            out.append((int(match.group(1)), float(match.group(2))))
    return out


def espeak16k(text: str, folder: Path) -> np.ndarray:
    """espeak-ng saying `text`, leading/trailing silence cut, as 16 kHz float."""
    pcm, rate = support_audio.read_wav(support_audio.speech_wav(text, folder / "speech.wav"))
    return pcm_to_float(support_audio.resample(support_audio.trim_silence(pcm, rate), rate, 16_000).tobytes())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * 16_000)), np.float32)


def raw_ssl(server: OfflineGeminiServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.ca_bundle)


def ws_url(server: OfflineGeminiServer, version: str = "v1beta") -> str:
    base = server.base_url.replace("https://", "wss://")
    return f"{base}/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


# ---- audio in, echo out --------------------------------------------------------------

async def test_speech_is_echoed_at_24khz_with_transcriptions(server, client, speech):
    server.script.transcripts[1] = "Hello there, friend."
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        await send_audio(session, pcm16k(speech["hello"]))
        msgs = await receive_until(session, turn_complete)

    assert text_of(msgs, "input_transcription") == "Hello there, friend."
    assert text_of(msgs, "output_transcription") == "Hello there, friend."
    parts = [p for m in msgs if m.server_content and m.server_content.model_turn
             for p in m.server_content.model_turn.parts]
    assert parts and all(p.inline_data.mime_type == "audio/pcm;rate=24000" for p in parts)
    # chunks of 20-40 ms, like the service
    assert max(len(p.inline_data.data) for p in parts) <= 24_000 * 2 * 40 // 1000
    flags = [k for m in msgs if m.server_content for k in ("generation_complete", "turn_complete")
             if getattr(m.server_content, k)]
    assert flags == ["generation_complete", "turn_complete"]
    assert any(m.usage_metadata and m.usage_metadata.total_token_count for m in msgs)

    assert_echo(speech["hello"], audio_of(msgs), server.sessions[0].utterances[0])

    recorded = server.sessions[0]
    assert recorded.model == MODEL
    assert recorded.setup["generation_config"]["response_modalities"] == ["AUDIO"]
    assert bytes(recorded.audio_in) == pcm16k(speech["hello"])
    assert recorded.kinds[0] == "setup" and set(recorded.kinds[1:]) == {"audio"}


async def test_manual_activity_detection_uses_activity_start_and_end(server, client, speech):
    config = dict(AUDIO_CONFIG, realtime_input_config={"automatic_activity_detection": {"disabled": True}})
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        await send_audio(session, float_to_pcm(speech["hello"]))
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        msgs = await receive_until(session, turn_complete)

    # no transcript registered: a deterministic placeholder describes the utterance
    secs = len(speech["hello"]) / 16_000
    assert text_of(msgs, "input_transcription") == f"utterance 1 ({secs:.2f} s)"
    assert_echo(speech["hello"], audio_of(msgs))
    # everything between activityStart and activityEnd comes back, sample for sample
    assert len(audio_of(msgs)) // 2 == len(resample(speech["hello"], 16_000, 24_000))


async def test_user_speech_interrupts_the_reply(server, client, speech):
    long_reply = synth_speech("this is a long scripted answer that the user will cut short " * 2)
    server.script.reply(1, text="a long answer", audio=long_reply)
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        await send_audio(session, pcm16k(speech["hello"]))
        first = await receive_until(session, lambda m: bool(m.data))
        await send_audio(session, pcm16k(speech["stop"]))  # barge in
        rest = await receive_until(session, turn_complete)
        interrupted_at = next(i for i, m in enumerate(rest) if m.server_content and m.server_content.interrupted)
        assert not audio_of(rest[interrupted_at:])  # nothing more of the interrupted reply
        assert len(audio_of(first + rest)) < len(long_reply)

        # the interrupting utterance is answered next, as an echo
        second = await receive_until(session, turn_complete)
    assert_echo(speech["stop"], audio_of(second), server.sessions[0].utterances[1])


# ---- activity detection (realtimeInputConfig) ----------------------------------------

@pytest.mark.parametrize("silence_ms, turns", [(300, 2), (900, 1)])
async def test_silence_duration_decides_where_a_turn_ends(server, client, tmp_path, silence_ms, turns):
    first, second = espeak16k("Hello there", tmp_path), espeak16k("how are you today", tmp_path)
    pause = silence(0.4)
    pcm = float_to_pcm(np.concatenate([silence(0.3), first, pause, second, silence(1.0)]))
    config = dict(AUDIO_CONFIG, realtime_input_config={
        "automatic_activity_detection": {"silence_duration_ms": silence_ms}})
    heard: list[int] = []

    def last_turn_complete(m: types.LiveServerMessage) -> bool:
        heard.extend(n for n, _ in input_utterances([m]))
        return turn_complete(m) and len(heard) == turns

    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        # paced like a microphone, so the server hears the pause as it happens
        sender = asyncio.create_task(send_audio(session, pcm, realtime=True))
        msgs = await receive_until(session, last_turn_complete)
        await sender
        await live.wait_for(lambda m: len(live.audio_in) == len(pcm))
        with pytest.raises(asyncio.TimeoutError):  # no further turn
            await receive_until(session, lambda m: True, timeout=0.5)

    utterances = input_utterances(msgs)
    assert [n for n, _ in utterances] == list(range(1, turns + 1))
    assert len(live.utterances) == turns
    # each turn holds its speech plus at most the 100 ms pre-roll and 60 ms tail (vad.py)
    spoken = [first, second] if turns == 2 else [np.concatenate([first, pause, second])]
    for (_, secs), words in zip(utterances, spoken):
        assert 0 <= secs - len(words) / 16_000 <= 0.2, (secs, len(words) / 16_000)
    last_turn = msgs[max(i for i, m in enumerate(msgs) if input_utterances([m])):]
    assert_echo(spoken[-1], audio_of(last_turn), live.utterances[-1])


def frame_levels(x: np.ndarray) -> list[float]:
    """dBFS of each 20 ms frame, framed as the server's detector frames the stream."""
    n = 16_000 * FRAME_MS // 1000
    return [rms_dbfs(x[i : i + n]) for i in range(0, len(x) - n + 1, n)]


def sustained_level(levels: list[float], frames: int) -> float:
    """The highest level held for `frames` frames in a row (dBFS)."""
    return max(min(levels[i : i + frames]) for i in range(len(levels) - frames + 1))


@pytest.mark.parametrize("sensitivity, detected", [("START_SENSITIVITY_HIGH", True), ("START_SENSITIVITY_LOW", False)])
async def test_start_sensitivity_decides_whether_quiet_speech_starts_a_turn(server, client, speech, sensitivity, detected):
    # vad.py starts a turn when 20 ms frames stay at or above a level for a while:
    # HIGH: -45 dBFS for 40 ms (2 frames); LOW: -35 dBFS for 80 ms (4 frames). Speech
    # scaled so that its loudest 40 ms are held at -40 dBFS clears HIGH by 5 dB, and its
    # loudest 80 ms can be no louder than that, 5 dB short of LOW.
    loud = speech["hello"]
    quiet = pcm_to_float(float_to_pcm(loud * 10 ** ((-40 - sustained_level(frame_levels(loud), 2)) / 20)))
    lead = silence(0.3)  # a whole number of frames: the frames measured here are the server's
    assert len(lead) % (16_000 * FRAME_MS // 1000) == 0
    levels = frame_levels(quiet)
    assert sustained_level(levels, 2) >= -41  # HIGH: >= 4 dB of margin
    assert sustained_level(levels, 4) <= -39  # LOW: >= 4 dB of margin
    pcm = float_to_pcm(np.concatenate([lead, quiet, silence(0.8)]))

    config = dict(AUDIO_CONFIG, realtime_input_config={
        "automatic_activity_detection": {"start_of_speech_sensitivity": sensitivity}})
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        await send_audio(session, pcm)
        if detected:
            msgs = await receive_until(session, turn_complete)
            assert [n for n, _ in input_utterances(msgs)] == [1]
            # the turn starts 100 ms (vad.py's pre-roll) ahead of the first 40 ms at
            # -45 dBFS: a fainter onset before that is not part of it
            frame = 16_000 * FRAME_MS // 1000
            onset = next(i for i in range(len(levels)) if min(levels[i : i + 2]) >= -45)
            assert_echo(quiet[max(0, onset * frame - 1600) :], audio_of(msgs), live.utterances[0])
            return
        await live.wait_for(lambda m: len(live.audio_in) == len(pcm))
        with pytest.raises(asyncio.TimeoutError):
            await receive_until(session, lambda m: True, timeout=0.5)
        assert live.utterances == []
        # not deaf: the same words at their normal level start a turn
        await send_audio(session, pcm16k(loud))
        msgs = await receive_until(session, turn_complete)
    assert [n for n, _ in input_utterances(msgs)] == [1]
    assert_echo(loud, audio_of(msgs), live.utterances[0])


async def test_no_interruption_lets_the_reply_finish(server, client, speech):
    reply_audio = synth_speech("a scripted answer that keeps on going")
    server.script.reply(1, text="a scripted answer", audio=reply_audio)
    config = dict(AUDIO_CONFIG, realtime_input_config={"activity_handling": "NO_INTERRUPTION"})
    stop = pcm16k(speech["stop"])
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        await session.send_realtime_input(text="Tell me something")
        first = await receive_until(session, lambda m: bool(m.data))
        await send_audio(session, stop)  # the user talks over the reply
        heard = await live.wait_for(lambda m: len(live.audio_in) == len(stop))
        rest = await receive_until(session, turn_complete)
        second = await receive_until(session, turn_complete)

    assert not any(m.server_content and m.server_content.interrupted for m in first + rest + second)
    assert audio_of(first + rest) == reply_audio  # the whole reply, not a byte less
    reply_done = next(s for s in live.sent if s.content.get("turnComplete"))
    assert heard.at < reply_done.at - 0.5  # the speech was over well before the reply was
    # the speech is still a turn of its own, answered after the reply
    assert [n for n, _ in input_utterances(second)] == [2]
    assert_echo(speech["stop"], audio_of(second), live.utterances[0])


async def test_activity_start_is_refused_while_automatic_detection_is_on(server, client):
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        live = await server.wait_for_session(1)
        await session.send_realtime_input(activity_start=types.ActivityStart())
        with pytest.raises(errors.APIError) as info:
            await receive_until(session, lambda m: False, timeout=5)
    assert info.value.code == 1007
    assert "Explicit activity control is not supported when automatic activity detection is enabled" in str(info.value)
    assert live.kinds == ["setup", "activity_start"]
    assert live.close_code == 1007 and [s.kind for s in live.sent] == ["setupComplete"]


# ---- pacing --------------------------------------------------------------------------

async def test_reply_audio_arrives_at_real_time_pace(server, client):
    reply = synth_speech("one two three four five six")
    seconds = len(reply) / 2 / 24_000
    assert seconds > 1.5
    server.script.reply(1, text="counting", audio=reply)
    arrivals: list[float] = []
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        asked = time.monotonic()
        await session.send_realtime_input(text="count to six")
        msgs = await receive_until(session, turn_complete, arrivals=arrivals)

    chunks = [(at - asked, m.data) for at, m in zip(arrivals, msgs) if m.data]
    assert b"".join(d for _, d in chunks) == reply
    lead = server.lead_ms / 1000
    # Each chunk arrives when the audio before it would have played, had playback begun
    # at the request: never more than the server's lead early (a hard bound: the server
    # started after `asked`), and not held back for a burst either (loose bound).
    before = 0.0
    for at, data in chunks:
        assert before - lead <= at <= before + 0.5, (at, before)
        before += len(data) / 2 / 24_000
    # so N seconds of audio take at least N seconds, less the lead and the last chunk
    last_at, last = chunks[-1]
    assert last_at >= seconds - len(last) / 2 / 24_000 - lead


# ---- text ----------------------------------------------------------------------------

async def test_text_modality_answers_text_turns(server, client):
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="Hi there")]))
        msgs = await receive_until(session, turn_complete)
        assert "".join(m.text or "" for m in msgs) == "You said: Hi there"
        assert not audio_of(msgs)

        await session.send_realtime_input(text="What time is it?")
        msgs = await receive_until(session, turn_complete)
        assert "".join(m.text or "" for m in msgs) == "You said: What time is it?"

        # the plugin's generate_reply(instructions=...) on older models
        await session.send_client_content(turns=[
            types.Content(role="model", parts=[types.Part(text="Greet the user warmly.")]),
            types.Content(role="user", parts=[types.Part(text=".")]),
        ])
        msgs = await receive_until(session, turn_complete)
        assert "".join(m.text or "" for m in msgs) == "Hello! You asked me to: Greet the user warmly."

    history = [(h["role"], h.get("text")) for h in server.sessions[0].conversation.history]
    assert ("user", "Hi there") in history and ("model", "You said: What time is it?") in history


async def test_text_turn_in_audio_modality_is_spoken(server, client):
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="Hi")]))
        msgs = await receive_until(session, turn_complete)
    assert text_of(msgs, "output_transcription") == "You said: Hi"
    assert len(audio_of(msgs)) > 24_000 * 2 * 0.3  # some real audio, not a click


# ---- tools ---------------------------------------------------------------------------

async def test_tool_call_round_trip(server, client):
    server.script.tool_call(1, "get_weather", {"city": "Paris"})
    server.script.tool_call(2, "book_table", {"people": 2})
    config = dict(AUDIO_CONFIG, tools=[{"function_declarations": [
        {"name": "get_weather", "description": "weather for a city"},
        {"name": "book_table", "description": "book a table"},
    ]}])
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_client_content(turns=types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]))
        msgs = await receive_until(session, lambda m: m.tool_call is not None)
        (call,) = msgs[-1].tool_call.function_calls
        assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
        await session.send_tool_response(function_responses=types.FunctionResponse(
            id=call.id, name=call.name, response={"output": {"temp_c": 21}}))
        msgs = await receive_until(session, turn_complete)
        assert text_of(msgs, "output_transcription") == 'get_weather returned {"temp_c": 21}'
        assert audio_of(msgs)

        await session.send_realtime_input(text="Book a table")
        msgs = await receive_until(session, lambda m: m.tool_call is not None)
        call = msgs[-1].tool_call.function_calls[0]
        await session.send_tool_response(function_responses=types.FunctionResponse(
            id=call.id, name=call.name, response={"error": "no tables left"}))
        msgs = await receive_until(session, turn_complete)
        assert text_of(msgs, "output_transcription") == "book_table failed: no tables left"

    responses = [m.body for m in server.sessions[0].received if m.kind == "tool_response"]
    assert responses[0]["function_responses"][0]["response"] == {"output": {"temp_c": 21}}


async def test_audio_turn_waits_for_the_tool_response(server, client, speech):
    server.script.tool_call(1, "lookup", {"order": "A17"})
    config = dict(AUDIO_CONFIG, tools=[{"function_declarations": [{"name": "lookup", "description": "find an order"}]}])
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        live = await server.wait_for_session(1)
        await send_audio(session, pcm16k(speech["hello"]))
        msgs = await receive_until(session, lambda m: m.tool_call is not None)
        assert [n for n, _ in input_utterances(msgs)] == [1]
        assert not audio_of(msgs)  # the user's audio is not echoed: the model calls the tool
        (call,) = msgs[-1].tool_call.function_calls
        assert (call.name, call.args) == ("lookup", {"order": "A17"})
        with pytest.raises(asyncio.TimeoutError):  # the tool takes its time; the server waits
            await receive_until(session, lambda m: True, timeout=0.6)
        await session.send_tool_response(function_responses=types.FunctionResponse(
            id=call.id, name=call.name, response={"output": {"ok": True}}))
        rest = await receive_until(session, turn_complete)

    assert text_of(rest, "output_transcription") == 'lookup returned {"ok": true}'
    assert audio_of(rest) == synth_speech('lookup returned {"ok": true}')
    called = next(i for i, s in enumerate(live.sent) if s.kind == "toolCall")
    answered = next(m for m in live.received if m.kind == "tool_response")
    after = live.sent[called + 1 :]
    assert answered.at - live.sent[called].at >= 0.6
    assert after and all(s.at >= answered.at for s in after)  # silence until the response
    assert "modelTurn" in after[0].content  # then it speaks
    assert after[-1].content == {"turnComplete": True}


# ---- validation ----------------------------------------------------------------------

async def test_unknown_model_is_closed_with_1008(server, client):
    with pytest.raises(errors.APIError) as info:
        async with client.aio.live.connect(model="gemini-0.1-imaginary", config=AUDIO_CONFIG):
            pass
    assert info.value.code == 1008
    assert "gemini-0.1-imaginary is not found" in str(info.value)


@pytest.mark.parametrize("frame, reason", [
    ("this is not json", "Invalid JSON"),
    (json.dumps({"bogus_input": {}}), "Unknown name"),
    (json.dumps({"realtime_input": {"audio": {"data": "@@not base64@@", "mime_type": "audio/pcm;rate=16000"}}}), "Base64"),
    (json.dumps({"realtime_input": {"audio": {"data": "AAAA", "mime_type": "audio/wav"}}}), "mime type"),
])
async def test_malformed_message_is_closed_with_1007(server, frame, reason):
    headers = {"x-goog-api-key": server.api_key}
    async with websockets.connect(ws_url(server), ssl=raw_ssl(server), additional_headers=headers) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}"}}))
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd.code == 1007
    assert reason in info.value.rcvd.reason


async def test_first_message_must_be_setup(server):
    headers = {"x-goog-api-key": server.api_key}
    async with websockets.connect(ws_url(server), ssl=raw_ssl(server), additional_headers=headers) as ws:
        await ws.send(json.dumps({"realtime_input": {"text": "hi"}}))
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd.code == 1007 and "setup" in info.value.rcvd.reason


async def test_both_casings_and_base64_alphabets_are_accepted(server):
    pcm = bytes(range(250, 256)) * 100  # bytes whose base64 holds '+' / '/' or '-' / '_'
    headers = {"x-goog-api-key": server.api_key}
    async with websockets.connect(ws_url(server, "v1alpha"), ssl=raw_ssl(server), additional_headers=headers) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{MODEL}",
                                            "generationConfig": {"responseModalities": ["AUDIO"]},
                                            "realtime_input_config": {"automaticActivityDetection": {"disabled": True}}}}))
        assert json.loads(await ws.recv()) == {"setupComplete": {}}
        await ws.send(json.dumps({"realtimeInput": {"audio": {"data": base64.b64encode(pcm).decode(), "mimeType": "audio/pcm;rate=16000"}}}))
        await ws.send(json.dumps({"realtime_input": {"audio": {"data": base64.urlsafe_b64encode(pcm).decode().rstrip("="), "mime_type": "audio/pcm;rate=16000"}}}))
        session = await server.wait_for_session(1)
        await session.wait_for(lambda m: m.kind == "audio" and len(session.audio_in) == 2 * len(pcm))
    assert bytes(session.audio_in) == pcm * 2
    assert session.api_version == "v1alpha"
    assert session.setup["realtime_input_config"]["automatic_activity_detection"] == {"disabled": True}


async def test_missing_api_key_is_refused(server):
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(ws_url(server), ssl=raw_ssl(server)):
            pass
    assert info.value.response.status_code == 401
    assert server.sessions == []


@pytest.mark.parametrize("api_version, base_suffix, path_prefix", [
    (None, "", ""),  # google-genai's default
    ("v1", "", ""),
    ("v1beta", "", ""),
    ("v1alpha", "", ""),
    ("v1beta", "/gemini-proxy/live", "/gemini-proxy/live"),  # a path prefix is kept
    ("v1alpha", "/", "/"),  # a trailing slash yields //ws/...
])
async def test_api_versions_and_base_url_paths(server, client, api_version, base_suffix, path_prefix):
    if api_version is None:
        versioned = client  # configured by the environment only
    else:
        versioned = genai.Client(http_options=types.HttpOptions(
            base_url=server.base_url + base_suffix, api_version=api_version))
    async with versioned.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="which version?")
        msgs = await receive_until(session, turn_complete)
    assert "".join(m.text or "" for m in msgs) == "You said: which version?"
    recorded = server.sessions[0]
    expected = api_version or "v1"
    assert recorded.api_version == expected
    assert recorded.path == f"{path_prefix}/ws/google.ai.generativelanguage.{expected}.GenerativeService.BidiGenerateContent"


@pytest.mark.parametrize("path", [
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.StreamGenerateContent",
    "/ws/google.ai.generativelanguage.v1beta.PredictionService.BidiGenerateContent",
    "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent/extra",
    "/v1beta/models/gemini-live:bidiGenerateContent",
])
async def test_wrong_path_is_404(server, path):
    url = server.base_url.replace("https://", "wss://") + path
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, ssl=raw_ssl(server), additional_headers={"x-goog-api-key": server.api_key}):
            pass
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body)["error"]["status"] == "NOT_FOUND"
    assert server.sessions == [] and server.refused == []


@pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")
async def test_ephemeral_token_uses_the_constrained_endpoint(server, client, monkeypatch):
    # minted with the API key (auth_tokens.create); tests/features/test_gemini_token.py has the rest
    minter = genai.Client(http_options=types.HttpOptions(api_version="v1alpha"))
    name = (await minter.aio.auth_tokens.create(config=types.CreateAuthTokenConfig(uses=1))).name
    token_client = genai.Client(api_key=name, http_options=types.HttpOptions(
        base_url=server.base_url, api_version="v1alpha"))
    async with token_client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="hello")
        msgs = await receive_until(session, turn_complete)
    assert "".join(m.text or "" for m in msgs) == "You said: hello"
    recorded = server.sessions[0]
    assert recorded.constrained and recorded.headers["Authorization"] == f"Token {name}"


# ---- session lifecycle ---------------------------------------------------------------

async def test_resumption_restores_the_conversation(server, client, speech):
    config = dict(TEXT_CONFIG, session_resumption={})
    async with client.aio.live.connect(model=MODEL, config=config) as session:
        await session.send_realtime_input(text="Remember the number 42")
        # resumable: false while the model answers, then a handle once the turn is over
        msgs = await receive_until(session, lambda m: bool(m.session_resumption_update and m.session_resumption_update.resumable))
    assert [m.session_resumption_update.resumable for m in msgs if m.session_resumption_update] == [False, True]
    update = msgs[-1].session_resumption_update
    assert update.resumable and update.new_handle

    resumed = dict(TEXT_CONFIG, session_resumption={"handle": update.new_handle})
    async with client.aio.live.connect(model=MODEL, config=resumed) as session:
        await send_audio(session, pcm16k(speech["stop"], 0.6))
        msgs = await receive_until(session, turn_complete)
    # the turn counter carried over: this is the conversation's second utterance
    assert text_of(msgs, "input_transcription").startswith("utterance 2 (")
    history = server.sessions[1].conversation.history
    assert history[0] == {"role": "user", "text": "Remember the number 42", "source": "realtime_input"}

    with pytest.raises(errors.APIError) as info:
        async with client.aio.live.connect(model=MODEL, config=dict(TEXT_CONFIG, session_resumption={"handle": "nope"})):
            pass
    assert info.value.code == 1007


async def test_go_away_is_sent_on_demand_and_after_a_scripted_turn(server, client):
    server.script.go_away_after_turn(1, time_left="0.2s")
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        live = await server.wait_for_session(1)
        await live.send_go_away("30s", close_after=False)
        msgs = await receive_until(session, lambda m: m.go_away is not None)
        assert msgs[-1].go_away.time_left == "30s"

        await session.send_realtime_input(text="hi")
        msgs = await receive_until(session, lambda m: m.go_away is not None)
        assert msgs[-1].go_away.time_left == "0.2s"
        await live.wait_closed()
    assert live.close_code == 1000


async def test_refused_reconnect_then_accepted(server, client):
    server.script.refuse_connections(1, status=503)
    with pytest.raises(websockets.InvalidStatus) as info:
        async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG):
            pass
    assert info.value.response.status_code == 503
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="again")
        await receive_until(session, turn_complete)
    assert [r.status for r in server.refused] == [503]
    assert len(server.sessions) == 1


async def test_scripted_close_with_1011(server, client):
    server.script.close_after_turn(1, code=1011, reason="Internal error encountered.")
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="hi")
        await receive_until(session, turn_complete)
        with pytest.raises(errors.APIError) as info:
            await receive_until(session, lambda m: False)
    assert info.value.code == 1011


async def test_stalled_session_stops_answering(server, client):
    server.script.stall_on_turn(1)
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        live = await server.wait_for_session(1)
        await session.send_realtime_input(text="are you there?")
        await live.wait_for(lambda m: m.kind == "text")
        with pytest.raises(asyncio.TimeoutError):
            await receive_until(session, lambda m: True, timeout=0.5)
        assert [s.kind for s in live.sent] == ["setupComplete"]

        live.unstall()
        await session.send_realtime_input(text="hello?")
        msgs = await receive_until(session, turn_complete)
    assert "".join(m.text or "" for m in msgs) == "You said: hello?"


async def test_video_frames_are_recorded(server, client):
    jpeg = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
    async with client.aio.live.connect(model=MODEL, config=AUDIO_CONFIG) as session:
        live = await server.wait_for_session(1)
        for _ in range(2):
            await session.send_realtime_input(video=types.Blob(data=jpeg, mime_type="image/jpeg"))
        await live.wait_for(lambda m: len(live.video_frames) == 2)
    assert [f.data for f in live.video_frames] == [jpeg, jpeg]
    assert live.video_frames[0].at <= live.video_frames[1].at


async def test_standalone_server_prints_one_ready_line(tmp_path, monkeypatch):
    import sys

    cert = tmp_path / "cert.pem"
    repo = Path(__file__).resolve().parents[2]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devstack.gemini", "--host", "127.0.0.1", "--port", "0", "--cert", str(cert),
        cwd=repo, stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        assert line[:2] == ["offline-gemini", "ready"] and line[2].startswith("https://127.0.0.1:")
        fields = dict(f.split("=", 1) for f in line[3:])
        assert fields["cert"] == str(cert) and cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
        monkeypatch.setenv("SSL_CERT_FILE", fields["ca_bundle"])
        standalone = genai.Client(api_key="any", http_options=types.HttpOptions(base_url=line[2]))
        async with standalone.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
            await session.send_realtime_input(text="ping")
            msgs = await receive_until(session, turn_complete)
        assert "".join(m.text or "" for m in msgs) == "You said: ping"
    finally:
        proc.terminate()
        await proc.wait()


async def test_usage_metadata_can_be_switched_off(server, client):
    server.script.send_usage_metadata = False
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="no usage")
        off = await receive_until(session, turn_complete)
        server.script.send_usage_metadata = True  # read per turn
        await session.send_realtime_input(text="with usage")
        on = await receive_until(session, turn_complete)

    assert "".join(m.text or "" for m in off) == "You said: no usage"
    assert not any(m.usage_metadata for m in off)
    assert [k for m in off if m.server_content for k in ("generation_complete", "turn_complete")
            if getattr(m.server_content, k)] == ["generation_complete", "turn_complete"]
    assert [m.usage_metadata is not None for m in on].count(True) == 1
    assert [s.kind for s in server.sessions[0].sent].count("usageMetadata") == 1


async def test_stalled_setup_leaves_the_client_waiting(server, client):
    server.script.stall_setup = True

    async def connect() -> None:
        async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG):
            pass

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(connect(), 1.0)
    stalled = await server.wait_for_session(1)
    assert stalled.model == MODEL and stalled.sent == []  # setup read, never answered
    await stalled.wait_closed(5)  # the client gave up and hung up

    server.script.stall_setup = False
    async with client.aio.live.connect(model=MODEL, config=TEXT_CONFIG) as session:
        await session.send_realtime_input(text="still there?")
        msgs = await receive_until(session, turn_complete)
    assert "".join(m.text or "" for m in msgs) == "You said: still there?"
    assert [s.kind for s in server.sessions[1].sent][0] == "setupComplete"
