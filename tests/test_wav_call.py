"""The WAV call client without an agent: reading and resampling the WAV files people
have, the frames it publishes, the token it mints, and the errors a user sees."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from livekit import api

from clients import credentials, wav_io

REPO = Path(__file__).resolve().parents[1]


def tone(freq: float, rate: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t) * amp  # float in [-1, 1]


def write_pcm16(path: Path, samples: np.ndarray, rate: int) -> Path:
    """samples: float, shape (n,) or (n, channels)."""
    s = samples if samples.ndim == 2 else samples[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(s.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((s * 32767).astype("<i2").tobytes())
    return path


def write_raw_wav(path: Path, tag: int, channels: int, rate: int, bits: int, data: bytes,
                  extensible: bool = False) -> Path:
    block = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 4) + b"INFO"  # a chunk readers must skip
    chunks += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    return path


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spec)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


# ------------------------------------------------------------ reading + resampling


def test_8k_stereo_becomes_48k_mono_with_the_same_pitch_and_length(tmp_path: Path) -> None:
    left = tone(440, 8000, 1.0)
    right = np.zeros_like(left)  # downmix averages: the tone comes out at half level
    path = write_pcm16(tmp_path / "in.wav", np.stack([left, right], axis=1), 8000)

    out = wav_io.load_for_publish(path)

    assert out.dtype == np.int16
    assert abs(len(out) - 48000) <= 48  # 1 s at 48 kHz (within 1 ms)
    assert abs(dominant_freq(out[4800:-4800], 48000) - 440) < 3
    expected = 0.3 / 2 * 32767 / np.sqrt(2)
    assert rms(out[4800:-4800]) == pytest.approx(expected, rel=0.05)


def test_44k1_mono_becomes_48k_keeping_pitch_level_and_duration(tmp_path: Path) -> None:
    path = write_pcm16(tmp_path / "in.wav", tone(1000, 44100, 2.0), 44100)

    out = wav_io.load_for_publish(path)

    assert abs(len(out) - 96000) <= 96
    assert abs(dominant_freq(out[9600:-9600], 48000) - 1000) < 3
    assert rms(out[9600:-9600]) == pytest.approx(0.3 * 32767 / np.sqrt(2), rel=0.05)


def test_48k_mono_is_passed_through_unchanged(tmp_path: Path) -> None:
    x = tone(300, 48000, 0.5)
    path = write_pcm16(tmp_path / "in.wav", x, 48000)
    out = wav_io.load_for_publish(path)
    assert np.array_equal(out, (x * 32767).astype(np.int16))


@pytest.mark.parametrize(
    "name,tag,bits,encode,extensible",
    [
        ("uint8", 1, 8, lambda x: ((x * 127) + 128).astype(np.uint8).tobytes(), False),
        ("int24", 1, 24, lambda x: b"".join(
            int(v).to_bytes(3, "little", signed=True) for v in (x * 8388607).astype(np.int32)), False),
        ("int32", 1, 32, lambda x: (x * 2147483647).astype("<i4").tobytes(), False),
        ("float32", 3, 32, lambda x: x.astype("<f4").tobytes(), False),
        ("float64", 3, 64, lambda x: x.astype("<f8").tobytes(), False),
        ("extensible int16", 1, 16, lambda x: (x * 32767).astype("<i2").tobytes(), True),
        ("extensible float32", 3, 32, lambda x: x.astype("<f4").tobytes(), True),
    ],
)
def test_other_sample_formats_decode_to_the_same_signal(
    tmp_path: Path, name: str, tag: int, bits: int, encode, extensible: bool
) -> None:
    x = tone(500, 16000, 0.5)
    path = write_raw_wav(tmp_path / "in.wav", tag, 1, 16000, bits, encode(x), extensible)

    audio = wav_io.read_wav(path)

    assert (audio.sample_rate, audio.num_channels, len(audio.samples)) == (16000, 1, 8000)
    ref = (x * 32767).astype(np.int16)
    tolerance = 300 if bits == 8 else 2  # 8-bit keeps only the top byte
    assert np.max(np.abs(audio.samples[:, 0].astype(np.int32) - ref)) <= tolerance


def test_six_channels_are_averaged(tmp_path: Path) -> None:
    x = tone(200, 16000, 0.2)
    path = write_pcm16(tmp_path / "in.wav", np.stack([x] * 6, axis=1), 16000)
    mono = wav_io.to_mono(wav_io.read_wav(path))
    assert np.max(np.abs(mono.astype(np.int32) - (x * 32767).astype(np.int16))) <= 1


# ---------------------------------------------------------------- frames


def test_frames_are_10ms_at_48k_and_the_last_one_is_padded() -> None:
    samples = np.arange(48000 * 105 // 1000, dtype=np.int16)  # 105 ms
    frames = list(wav_io.iter_frames(samples))
    assert len(frames) == 11
    assert all(f.sample_rate == 48000 and f.num_channels == 1 for f in frames)
    assert all(f.samples_per_channel == 480 for f in frames)
    last = np.frombuffer(frames[-1].data, np.int16)
    assert np.array_equal(last[:240], samples[4800:]) and not last[240:].any()
    joined = np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])
    assert np.array_equal(joined[: len(samples)], samples)


def test_silence_tail_is_one_second_of_zeros() -> None:
    frames = list(wav_io.silence_frames(1.0))
    assert len(frames) == 100
    assert not any(np.frombuffer(f.data, np.int16).any() for f in frames)


def test_writer_produces_16bit_mono_wav(tmp_path: Path) -> None:
    w = wav_io.WavWriter(tmp_path / "sub" / "out.wav", 24000)
    w.write((tone(440, 24000, 0.5) * 32767).astype(np.int16))
    w.close()
    with wave.open(str(tmp_path / "sub" / "out.wav")) as r:
        assert (r.getnchannels(), r.getsampwidth(), r.getframerate(), r.getnframes()) == (
            1, 2, 24000, 12000)


# ---------------------------------------------------------------- bad input files


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(wav_io.WavInputError, match=r"input file not found: .*nope\.wav"):
        wav_io.read_wav(tmp_path / "nope.wav")


def test_text_file_is_not_a_wav(tmp_path: Path) -> None:
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio")
    with pytest.raises(wav_io.WavInputError, match=r"notes\.wav is not a WAV file"):
        wav_io.read_wav(p)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(wav_io.WavInputError, match="is a directory"):
        wav_io.read_wav(tmp_path)


def test_compressed_wav_is_rejected_with_its_format(tmp_path: Path) -> None:
    p = write_raw_wav(tmp_path / "adpcm.wav", 0x0002, 1, 8000, 4 * 2, b"\x00" * 64)
    with pytest.raises(wav_io.WavInputError, match="unsupported"):
        wav_io.read_wav(p)


def test_wav_without_samples_is_rejected(tmp_path: Path) -> None:
    p = write_raw_wav(tmp_path / "empty.wav", 1, 1, 16000, 16, b"")
    with pytest.raises(wav_io.WavInputError, match="contains no audio samples"):
        wav_io.read_wav(p)


# ---------------------------------------------------------------- token


def _claims(token: str) -> api.access_token.Claims:
    return api.TokenVerifier("key", "s" * 32).verify(token)


def test_token_joins_one_room_with_least_privilege_and_dispatches_the_agent() -> None:
    creds = credentials.LiveKitCredentials("ws://x", "key", "s" * 32)
    c = _claims(credentials.caller_token(creds, room="r1", identity="me", agent_name="gemini-agent"))
    v = c.video
    assert c.identity == "me"
    assert v.room_join and v.room == "r1"
    assert v.can_publish and v.can_subscribe and v.can_publish_sources == ["microphone"]
    assert not v.can_publish_data
    assert not (v.room_admin or v.room_create or v.room_list or v.room_record or v.agent)
    assert [a.agent_name for a in c.room_config.agents] == ["gemini-agent"]


def test_empty_agent_name_leaves_dispatch_automatic() -> None:
    creds = credentials.LiveKitCredentials("ws://x", "key", "s" * 32)
    c = _claims(credentials.caller_token(creds, room="r1", identity="me", agent_name=None))
    assert c.room_config is None or not c.room_config.agents


@pytest.mark.parametrize(
    "given,expected",
    [("http://h:7880", "ws://h:7880"), ("https://h", "wss://h"), ("h:7880/", "ws://h:7880"),
     ("wss://x.livekit.cloud", "wss://x.livekit.cloud")],
)
def test_url_forms_are_normalised(given: str, expected: str) -> None:
    assert credentials.signal_url(given) == expected


# ---------------------------------------------------------------- the CLI


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    # empty values are kept by python-dotenv: no .env file can fill them in
    e.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""})
    e.update(env)
    return subprocess.run(
        [sys.executable, "-m", "clients.wav_call", *args],
        cwd=REPO, env=e, capture_output=True, text=True, timeout=60,
    )


def test_cli_missing_input_file(tmp_path: Path) -> None:
    r = run_cli(tmp_path, "--input", str(tmp_path / "q.wav"), "--output", str(tmp_path / "a.wav"))
    assert r.returncode == 1
    assert f"error: input file not found: {tmp_path / 'q.wav'}" in r.stderr


def test_cli_input_not_a_wav(tmp_path: Path) -> None:
    (tmp_path / "q.wav").write_bytes(b"ID3\x03mp3 data")
    r = run_cli(tmp_path, "-i", str(tmp_path / "q.wav"), "-o", str(tmp_path / "a.wav"))
    assert r.returncode == 1
    assert "is not a WAV file" in r.stderr


def test_cli_missing_credentials_names_each_variable(tmp_path: Path) -> None:
    q = write_pcm16(tmp_path / "q.wav", tone(440, 16000, 0.2), 16000)
    r = run_cli(tmp_path, "-i", str(q), "-o", str(tmp_path / "a.wav"),
                LIVEKIT_URL="ws://127.0.0.1:7880")
    assert r.returncode == 1
    assert "missing LiveKit credentials: LIVEKIT_API_KEY, LIVEKIT_API_SECRET" in r.stderr
    assert not (tmp_path / "a.wav").exists()


def test_cli_connection_refused(tmp_path: Path) -> None:
    q = write_pcm16(tmp_path / "q.wav", tone(440, 16000, 0.2), 16000)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli(tmp_path, "-i", str(q), "-o", str(tmp_path / "a.wav"),
                "--url", f"ws://127.0.0.1:{port}",
                LIVEKIT_API_KEY="devkey", LIVEKIT_API_SECRET="s" * 32)
    assert r.returncode == 1
    assert f"error: could not connect to LiveKit at ws://127.0.0.1:{port}" in r.stderr
    assert "refused" in r.stderr
    assert not (tmp_path / "a.wav").exists()


# ------------------------------------------- against the local LiveKit server
#
# The real agent is exercised by the end-to-end tests; here a participant of kind
# AGENT that greets with a 300 Hz tone and then repeats what it heard (publishing
# lk.agent.state like livekit-agents does) lets the client's whole flow run.

import asyncio  # noqa: E402

from livekit import rtc  # noqa: E402

from devstack.livekit import LocalLiveKitServer, load_config  # noqa: E402

AGENT_STATE = "lk.agent.state"


class ParrotAgent:
    def __init__(self, lk, room: str, greeting: np.ndarray) -> None:
        self.lk, self.room_name, self.greeting = lk, room, greeting
        self.room = rtc.Room()
        self.source = rtc.AudioSource(48000, 1)
        self.heard = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        token = (
            api.AccessToken(self.lk.api_key, self.lk.api_secret)
            .with_identity("agent-parrot")
            .with_kind("agent")
            .with_grants(api.VideoGrants(room_join=True, room=self.room_name,
                                         can_update_own_metadata=True, agent=True))
            .to_jwt()
        )
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(self.lk.url, token)
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await self.room.local_participant.set_attributes({AGENT_STATE: "listening"})

    def _on_track(self, track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self.tasks.append(asyncio.create_task(self._converse(track)))

    async def _say(self, samples: np.ndarray) -> None:
        await self.room.local_participant.set_attributes({AGENT_STATE: "speaking"})
        for frame in wav_io.iter_frames(samples):
            await self.source.capture_frame(frame)
        await self.source.wait_for_playout()
        await self.room.local_participant.set_attributes({AGENT_STATE: "listening"})

    async def _converse(self, track: rtc.Track) -> None:
        await asyncio.sleep(0.3)
        await self._say(self.greeting)
        speech: list[np.ndarray] = []
        quiet = 0
        async for ev in rtc.AudioStream.from_track(track=track, sample_rate=48000, num_channels=1):
            x = np.frombuffer(ev.frame.data, np.int16)
            if np.abs(x.astype(np.int32)).max() >= 1000:
                speech.append(x.copy())
                quiet = 0
            elif speech:
                quiet += 1
                if quiet >= 50:  # 0.5 s of silence after speech: reply
                    break
        self.heard.set()
        await self._say(np.concatenate(speech))

    async def aclose(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.room.disconnect()


async def run_cli_async(*args: str, **env: str) -> tuple[int, str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    e.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.wav_call", *args, cwd=REPO, env=e,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def lk():
    async with LocalLiveKitServer(load_config(REPO / "livekit.yaml", port=0)) as server:
        yield server


def _env(lk) -> dict[str, str]:
    return {"LIVEKIT_URL": lk.url, "LIVEKIT_API_KEY": lk.api_key, "LIVEKIT_API_SECRET": lk.api_secret}


async def test_agent_that_never_joins_is_reported(lk, tmp_path: Path) -> None:
    q = write_pcm16(tmp_path / "q.wav", tone(440, 16000, 0.5), 16000)
    rc, _out, err = await run_cli_async(
        "-i", str(q), "-o", str(tmp_path / "a.wav"), "--room", "lonely",
        "--agent-name", "nobody-agent", "--agent-timeout", "1", **_env(lk))
    assert rc == 1
    assert "error: agent 'nobody-agent' did not join room 'lonely' within 1 s" in err
    assert not (tmp_path / "a.wav").exists()


async def test_call_records_the_reply_and_not_the_greeting(lk, tmp_path: Path) -> None:
    room = "parrot-room"
    # the caller's question: 1 s of 440 Hz from an 8 kHz stereo file
    q = write_pcm16(tmp_path / "q.wav", np.stack([tone(440, 8000, 1.0)] * 2, axis=1), 8000)
    parrot = ParrotAgent(lk, room, (tone(300, 48000, 0.6) * 32767).astype(np.int16))
    lk.rooms.create_room(room)
    await parrot.start()
    try:
        rc, out, err = await run_cli_async(
            "-i", str(q), "-o", str(tmp_path / "a.wav"), "--room", room,
            "--greeting-wait", "1.5", "--timeout", "60", **_env(lk))
        assert rc == 0, err
        assert parrot.heard.is_set()
        assert f"wrote {tmp_path / 'a.wav'}" in out and "ended by agent-state" in out

        with wave.open(str(tmp_path / "a.wav")) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
            reply = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        loud = reply[np.abs(reply.astype(np.int32)) > 0]
        assert len(loud) > 0.8 * 24000  # most of the 1 s question came back
        assert abs(dominant_freq(reply, 24000) - 440) < 5  # the reply, not the 300 Hz greeting
        spec = np.abs(np.fft.rfft(reply.astype(np.float64)))
        freqs = np.fft.rfftfreq(len(reply), 1 / 24000)
        band = lambda f: spec[(freqs > f - 20) & (freqs < f + 20)].max()  # noqa: E731
        assert band(300) < band(440) / 20
    finally:
        await parrot.aclose()
