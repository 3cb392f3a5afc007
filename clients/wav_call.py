"""Call the voice agent with a WAV file and record its spoken reply to another WAV file.

    python -m clients.wav_call --input question.wav --output reply.wav

Joins a LiveKit room as an ordinary participant, has the agent dispatched by name
through the token's room configuration, waits for the agent to join, publishes the
input file as a microphone track in real time (10 ms frames, then a second of silence
so the agent's voice-activity detection sees the end of speech) and records the
agent's audio track until its reply ends: the agent's ``lk.agent.state`` attribute
goes from "speaking" back to "listening" (fallback: a stretch of silence after reply
audio; overall limit: --timeout).

URL and API key/secret come from LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET
(environment or .env). Exit status 0 on a recorded reply, 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from livekit import rtc

from . import credentials, wav_io

logger = logging.getLogger("wav_call")

AGENT_STATE = "lk.agent.state"
DEFAULT_AGENT_NAME = "gemini-agent"
LOUD = 500  # peak sample value (about -36 dBFS) that counts as sound, not silence


class CallError(Exception):
    """The call could not be made or completed; the message says why."""


@dataclass
class CallOptions:
    input: str
    output: str
    url: str | None = None
    room: str | None = None
    identity: str | None = None
    agent_name: str = DEFAULT_AGENT_NAME
    timeout: float = 90.0
    agent_timeout: float = 30.0
    connect_timeout: float = 15.0
    output_rate: int = 24000
    silence_after_input: float = 1.0
    greeting_wait: float = 3.0
    reply_silence: float = 3.0


@dataclass
class CallResult:
    output: str
    room: str
    agent_identity: str
    input_seconds: float
    reply_seconds: float
    reply_latency: float | None  # end of input speech -> first reply audio
    ended_by: str  # "agent-state" | "silence"


@dataclass
class _Progress:
    """What the event handlers have seen; read by the main task."""

    agent: rtc.RemoteParticipant | None = None
    agent_joined: asyncio.Event = field(default_factory=asyncio.Event)
    state: str = ""
    state_changed: asyncio.Event = field(default_factory=asyncio.Event)
    recording_from: float | None = None  # monotonic time input streaming began
    speech_end: float | None = None  # monotonic time the input's speech ended
    spoke_after_speech: bool = False  # "speaking" seen at/after speech_end
    reply_done_at: float | None = None  # "speaking" -> "listening" after speech_end
    first_loud: float | None = None
    last_loud: float | None = None
    disconnected: str | None = None


class _Recorder:
    """Writes the agent's audio from its first audible frame after input began."""

    def __init__(self, sample_rate: int, progress: _Progress) -> None:
        self.sample_rate = sample_rate
        self.writer: wav_io.WavWriter | None = None  # opened when the input starts
        self.p = progress
        self.task: asyncio.Task | None = None

    def attach(self, track: rtc.Track) -> None:
        if self.task is None:
            self.task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(
            track=track, sample_rate=self.sample_rate, num_channels=1
        )
        try:
            async for ev in stream:
                now = time.monotonic()
                if self.writer is None:
                    continue  # agent audio before our question (e.g. a greeting) is not kept
                frame = ev.frame
                loud = wav_io.peak(frame) >= LOUD
                if loud:
                    self.p.last_loud = now
                    if self.p.first_loud is None:
                        self.p.first_loud = now
                if self.p.first_loud is not None:
                    self.writer.write(np.frombuffer(frame.data, np.int16))
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def _is_agent(p: rtc.RemoteParticipant) -> bool:
    return p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


async def run_call(opts: CallOptions) -> CallResult:
    samples = wav_io.load_for_publish(opts.input)  # fail on a bad file before connecting
    if Path(opts.output).is_dir():
        raise CallError(f"output path is a directory: {opts.output}")
    creds = credentials.resolve(opts.url)
    room_name = opts.room or f"wav-call-{uuid.uuid4().hex[:8]}"
    identity = opts.identity or f"wav-caller-{uuid.uuid4().hex[:6]}"
    token = credentials.caller_token(
        creds,
        room=room_name,
        identity=identity,
        agent_name=opts.agent_name or None,
        ttl=datetime.timedelta(seconds=opts.timeout + 600),
    )

    started = time.monotonic()
    deadline = started + opts.timeout
    p = _Progress()
    room = rtc.Room()
    recorder = _Recorder(opts.output_rate, p)

    def consider(participant: rtc.RemoteParticipant) -> None:
        if p.agent is None and _is_agent(participant):
            p.agent = participant
            p.agent_joined.set()
            set_state(participant.attributes.get(AGENT_STATE, ""))

    def set_state(state: str) -> None:
        if not state or state == p.state:
            return
        now = time.monotonic()
        if p.speech_end is not None and now >= p.speech_end:
            if state == "speaking":
                p.spoke_after_speech = True
            elif state == "listening" and p.state == "speaking" and p.spoke_after_speech:
                p.reply_done_at = now
        logger.debug("agent state %s -> %s", p.state or "(none)", state)
        p.state = state
        p.state_changed.set()

    @room.on("participant_connected")
    def _on_join(participant: rtc.RemoteParticipant) -> None:
        consider(participant)

    @room.on("participant_attributes_changed")
    def _on_attrs(changed: dict[str, str], participant: rtc.Participant) -> None:
        if p.agent is not None and participant.identity == p.agent.identity and AGENT_STATE in changed:
            set_state(changed[AGENT_STATE])

    @room.on("track_subscribed")
    def _on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and _is_agent(participant):
            recorder.attach(track)

    @room.on("disconnected")
    def _on_disconnected(reason: object) -> None:
        p.disconnected = str(reason)
        p.state_changed.set()
        p.agent_joined.set()

    try:
        try:
            await asyncio.wait_for(
                room.connect(creds.url, token, rtc.RoomOptions(auto_subscribe=True)),
                opts.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise CallError(
                f"could not connect to LiveKit at {creds.url}: no answer within "
                f"{opts.connect_timeout:g} s"
            ) from None
        except rtc.ConnectError as e:
            hint = " (is the LiveKit server running?)" if "refused" in e.message.lower() else ""
            raise CallError(
                f"could not connect to LiveKit at {creds.url}: {e.message}{hint}"
            ) from None
        logger.info("joined room %s as %s", room_name, identity)

        for participant in room.remote_participants.values():
            consider(participant)
        try:
            await asyncio.wait_for(
                p.agent_joined.wait(), min(opts.agent_timeout, deadline - time.monotonic())
            )
        except asyncio.TimeoutError:
            who = f"agent {opts.agent_name!r}" if opts.agent_name else "no agent (automatic dispatch)"
            raise CallError(
                f"{who} did not join room {room_name!r} within {opts.agent_timeout:g} s; "
                "is an agent worker running and registered with that name?"
            ) from None
        if p.agent is None:
            raise CallError(f"disconnected from the room before an agent joined: {p.disconnected}")
        agent_identity = p.agent.identity
        logger.info("agent %s joined", agent_identity)

        source = rtc.AudioSource(wav_io.PUBLISH_RATE, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("wav-input", source)
        pub = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        # Speech sent before the agent listens would be lost: wait until it has
        # subscribed, and until it is listening rather than greeting us.
        try:
            await asyncio.wait_for(pub.wait_for_subscription(), 10.0)
        except asyncio.TimeoutError:
            logger.warning("the agent has not subscribed to the input after 10 s; sending anyway")
        await _wait_until_idle(p, opts, deadline)

        input_seconds = len(samples) / wav_io.PUBLISH_RATE
        recorder.writer = wav_io.WavWriter(opts.output, opts.output_rate)
        p.recording_from = time.monotonic()
        await _stream(source, wav_io.iter_frames(samples), deadline)
        p.speech_end = time.monotonic()
        if p.state == "speaking":
            p.spoke_after_speech = True
        await _stream(source, wav_io.silence_frames(opts.silence_after_input), deadline)
        input_end = time.monotonic()
        logger.info("sent %.2f s of audio plus %.1f s of silence", input_seconds, opts.silence_after_input)

        ended_by = await _wait_for_reply_end(p, opts, input_end, deadline)
        reply_latency = (
            p.first_loud - p.speech_end
            if p.first_loud is not None and p.speech_end is not None
            else None
        )
        return CallResult(
            output=opts.output,
            room=room_name,
            agent_identity=agent_identity,
            input_seconds=input_seconds,
            reply_seconds=recorder.writer.duration,
            reply_latency=reply_latency,
            ended_by=ended_by,
        )
    finally:
        await recorder.aclose()
        if recorder.writer is not None:
            recorder.writer.close()
        await room.disconnect()


async def _wait_state_change(p: _Progress, timeout: float) -> bool:
    p.state_changed.clear()
    try:
        await asyncio.wait_for(p.state_changed.wait(), max(timeout, 0))
        return True
    except asyncio.TimeoutError:
        return False


async def _wait_until_idle(p: _Progress, opts: CallOptions, deadline: float) -> None:
    """Wait until the agent listens and has not started talking (e.g. a greeting)
    for ``greeting_wait`` seconds; its session state comes from ``lk.agent.state``."""
    limit = min(deadline, time.monotonic() + opts.agent_timeout)
    while p.disconnected is None and time.monotonic() < limit:
        if p.state in ("", "initializing", "thinking", "speaking"):
            await _wait_state_change(p, limit - time.monotonic())
            continue
        # listening (or a state we do not know): give a greeting the chance to start
        if not await _wait_state_change(p, min(opts.greeting_wait, limit - time.monotonic())):
            return
    if p.state in ("", "initializing"):
        logger.warning("the agent has not reported a listening state; sending anyway")


async def _stream(source: rtc.AudioSource, frames, deadline: float) -> None:
    """Send frames at real time (the source's 100 ms queue smooths scheduling jitter)."""
    t0 = time.monotonic()
    sent = 0.0
    for frame in frames:
        if time.monotonic() > deadline:
            raise CallError("timed out while sending the input audio")
        await source.capture_frame(frame)
        sent += frame.samples_per_channel / frame.sample_rate
        ahead = t0 + sent - time.monotonic() - 0.05
        if ahead > 0:
            await asyncio.sleep(ahead)
    await source.wait_for_playout()


async def _wait_for_reply_end(
    p: _Progress, opts: CallOptions, input_end: float, deadline: float
) -> str:
    while True:
        now = time.monotonic()
        if p.disconnected is not None:
            raise CallError(f"disconnected from the room before the reply ended: {p.disconnected}")
        if p.reply_done_at is not None:
            # the state flips when the agent's playout ends; its last audio is still in
            # flight: keep recording until it has been quiet briefly (at most 2 s).
            quiet = p.last_loud is None or now - p.last_loud >= 0.4
            if quiet or now - p.reply_done_at >= 2.0:
                return "agent-state"
        elif (
            p.last_loud is not None
            and now >= input_end
            and now - max(p.last_loud, input_end) >= opts.reply_silence
        ):
            return "silence"
        if now >= deadline:
            got = f"{p.last_loud and 'some reply audio was recorded' or 'no reply audio arrived'}"
            raise CallError(f"timed out after {opts.timeout:g} s waiting for the agent's reply to end ({got})")
        await asyncio.sleep(0.05)


def parse_args(argv: list[str] | None = None) -> CallOptions:
    ap = argparse.ArgumentParser(
        prog="python -m clients.wav_call",
        description="Send a WAV file to the voice agent through a LiveKit room and "
        "record its spoken reply.",
    )
    ap.add_argument("--input", "-i", required=True, help="WAV file to send (any rate/channels)")
    ap.add_argument("--output", "-o", required=True, help="WAV file for the agent's reply")
    ap.add_argument("--url", help="LiveKit URL (default: $LIVEKIT_URL)")
    ap.add_argument("--room", help="room name (default: a new random room)")
    ap.add_argument("--identity", help="participant identity (default: random)")
    ap.add_argument(
        "--agent-name",
        default=DEFAULT_AGENT_NAME,
        help=f"agent to dispatch (default: {DEFAULT_AGENT_NAME}); '' for automatic dispatch",
    )
    ap.add_argument("--timeout", type=float, default=90.0, help="overall limit in seconds (default 90)")
    ap.add_argument(
        "--agent-timeout", type=float, default=30.0,
        help="seconds to wait for the agent to join (default 30)",
    )
    ap.add_argument(
        "--output-rate", type=int, choices=(24000, 48000), default=24000,
        help="sample rate of the output WAV (default 24000)",
    )
    ap.add_argument(
        "--reply-silence", type=float, default=3.0,
        help="fallback: end after this many seconds of silence following reply audio",
    )
    ap.add_argument(
        "--greeting-wait", type=float, default=3.0,
        help="seconds the agent must stay listening (not greeting) before the input "
        "is sent (default 3; 0 sends as soon as it listens)",
    )
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    if a.timeout <= 0 or a.agent_timeout <= 0:
        ap.error("--timeout and --agent-timeout must be positive")
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logger.setLevel(logging.DEBUG if a.verbose else logging.INFO)
    if not a.verbose:
        # the SDK logs every retry; the failure itself is reported by this client
        logging.getLogger("livekit").setLevel(logging.CRITICAL)
    return CallOptions(
        input=a.input,
        output=a.output,
        url=a.url,
        room=a.room,
        identity=a.identity,
        agent_name=a.agent_name,
        timeout=a.timeout,
        agent_timeout=a.agent_timeout,
        output_rate=a.output_rate,
        reply_silence=a.reply_silence,
        greeting_wait=a.greeting_wait,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        result = asyncio.run(run_call(opts))
    except (CallError, wav_io.WavInputError, credentials.CredentialsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    latency = f"{result.reply_latency:.2f} s" if result.reply_latency is not None else "n/a"
    print(
        f"wrote {result.output}: {result.reply_seconds:.2f} s of reply from "
        f"{result.agent_identity} (reply began {latency} after the end of the input speech; "
        f"ended by {result.ended_by})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
