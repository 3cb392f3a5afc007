"""End-to-end tests of devstack.livekit with the real SDKs: livekit rtc (Rust core,
real WebRTC), livekit-api tokens, and a livekit-agents AgentServer in a subprocess.
No mocks; assertions are about what a participant sees.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
from livekit import api, rtc
from livekit.protocol import agent as proto_agent
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import rtc as proto_rtc
from livekit.protocol.agent_dispatch import RoomAgentDispatch

from devstack.livekit import LocalLiveKitServer, load_config
from devstack.livekit import signal as lk_signal

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lk():
    async with LocalLiveKitServer(load_config(REPO / "livekit.yaml", port=0)) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def rooms():
    """Connected rtc.Rooms, disconnected after the test."""
    opened: list[rtc.Room] = []
    yield opened
    for r in opened:
        await r.disconnect()


def token(lk, identity: str, room: str, *, kind: str | None = None,
          room_config: proto_room.RoomConfiguration | None = None,
          ttl: datetime.timedelta | None = None, secret: str | None = None, **grants: Any) -> str:
    grants.setdefault("can_update_own_metadata", True)
    t = (api.AccessToken(lk.api_key, secret or lk.api_secret)
         .with_identity(identity).with_name(identity.title())
         .with_grants(api.VideoGrants(room_join=True, room=room, **grants)))
    if kind:
        t = t.with_kind(kind)
    if room_config is not None:
        t = t.with_room_config(room_config)
    if ttl is not None:
        t = t.with_ttl(ttl)
    return t.to_jwt()


async def join(lk, rooms: list, identity: str, room: str, *,
               options: rtc.RoomOptions | None = None, **kw: Any) -> rtc.Room:
    r = rtc.Room()
    await r.connect(lk.url, token(lk, identity, room, **kw), options=options or rtc.RoomOptions())
    rooms.append(r)
    return r


def waiter(emitter, event: str, pred: Callable[..., bool] = lambda *a: True) -> asyncio.Future:
    """Future resolved with the args of the first `event` matching pred."""
    fut = asyncio.get_running_loop().create_future()

    def _on(*args):
        if not fut.done() and pred(*args):
            fut.set_result(args if len(args) != 1 else args[0])

    emitter.on(event, _on)
    return fut


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    async def _poll():
        while not cond():
            await asyncio.sleep(0.02)
    await asyncio.wait_for(_poll(), timeout)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spec = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spec))
    # parabolic interpolation around the peak for sub-bin accuracy
    if 0 < k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1:k + 2] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k * rate / len(samples)


async def feed_sine(source: rtc.AudioSource, freq: float = 440.0) -> None:
    rate, n, i = 48000, 480, 0
    while True:
        t = (np.arange(n) + i * n) / rate
        pcm = (np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), rate, 1, n))
        i += 1


async def publish_tone(participant: rtc.LocalParticipant) -> tuple[rtc.LocalTrackPublication, asyncio.Task]:
    """Publish a microphone track playing 440 Hz; returns its publication and the feeding task
    (cancel it when done)."""
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    feeder = asyncio.create_task(feed_sine(source))
    pub = await participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    return pub, feeder


async def capture(track: rtc.Track, frames: int = 100) -> np.ndarray:
    """The last 60 of `frames` 10 ms frames of a remote audio track (start-up skipped)."""
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    chunks: list[np.ndarray] = []

    async def collect():
        async for ev in stream:
            chunks.append(np.frombuffer(ev.frame.data, dtype=np.int16))
            if len(chunks) >= frames:
                return
    try:
        await asyncio.wait_for(collect(), 10)
    finally:
        await stream.aclose()
    return np.concatenate(chunks[-60:])


def assert_440hz(pcm: np.ndarray) -> None:
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 2000  # not silence
    assert abs(dominant_frequency(pcm, 48000) - 440.0) < 3.0


async def feed_video(source: rtc.VideoSource, w: int = 320, h: int = 240) -> None:
    i = 0
    while True:
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[:, :, 0] = (i * 5) % 255
        rgba[:, (i * 4) % w, 1] = 255
        source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.RGBA, rgba.tobytes()))
        i += 1
        await asyncio.sleep(1 / 30)


# --------------------------------------------------------------------------- #


async def test_audio_track_carries_a_440hz_tone(lk, rooms):
    alice = await join(lk, rooms, "alice", "audio-room")
    bob = await join(lk, rooms, "bob", "audio-room")
    assert "alice" in bob.remote_participants
    assert bob.remote_participants["alice"].kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD

    subscribed = waiter(bob, "track_subscribed")
    local_subscribed = waiter(alice, "local_track_subscribed")
    pub, feeder = await publish_tone(alice.local_participant)
    try:
        remote_track, remote_pub, participant = await asyncio.wait_for(subscribed, 10)
        assert participant.identity == "alice"
        assert remote_pub.sid == pub.sid
        assert remote_pub.source == rtc.TrackSource.SOURCE_MICROPHONE
        await asyncio.wait_for(local_subscribed, 10)  # publisher told someone listens
        pcm = await capture(remote_track)  # 1 s of 10 ms frames
    finally:
        feeder.cancel()
    assert_440hz(pcm)


async def test_video_camera_and_screen_share_mute_and_unpublish(lk, rooms):
    alice = await join(lk, rooms, "alice", "video-room")
    bob = await join(lk, rooms, "bob", "video-room")

    cam_src, screen_src = rtc.VideoSource(320, 240), rtc.VideoSource(320, 240)
    cam = rtc.LocalVideoTrack.create_video_track("cam", cam_src)
    screen = rtc.LocalVideoTrack.create_video_track("screen", screen_src)
    feeders = [asyncio.create_task(feed_video(cam_src)), asyncio.create_task(feed_video(screen_src))]
    try:
        got_cam = waiter(bob, "track_subscribed", lambda t, p, part: p.source == rtc.TrackSource.SOURCE_CAMERA)
        got_screen = waiter(bob, "track_subscribed", lambda t, p, part: p.source == rtc.TrackSource.SOURCE_SCREENSHARE)
        # camera with the SDK's default (simulcast) options, screen share without
        cam_pub = await alice.local_participant.publish_track(
            cam, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))
        await alice.local_participant.publish_track(
            screen, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_SCREENSHARE, simulcast=False))
        cam_track, _, _ = await asyncio.wait_for(got_cam, 10)
        await asyncio.wait_for(got_screen, 10)

        stream = rtc.VideoStream(cam_track)
        frames = []
        async def collect():
            async for ev in stream:
                frames.append(ev.frame)
                if len(frames) >= 10:
                    return
        await asyncio.wait_for(collect(), 10)
        await stream.aclose()
        # one encoding is forwarded; libwebrtc may scale it down, never distort it
        assert frames[-1].width * 3 == frames[-1].height * 4 and frames[-1].width <= 320

        muted = waiter(bob, "track_muted", lambda part, pub: pub.sid == cam_pub.sid)
        cam.mute()
        await asyncio.wait_for(muted, 10)
        assert bob.remote_participants["alice"].track_publications[cam_pub.sid].muted
        unmuted = waiter(bob, "track_unmuted", lambda part, pub: pub.sid == cam_pub.sid)
        cam.unmute()
        await asyncio.wait_for(unmuted, 10)

        unpublished = waiter(bob, "track_unpublished", lambda pub, part: pub.sid == cam_pub.sid)
        await alice.local_participant.unpublish_track(cam_pub.sid)
        await asyncio.wait_for(unpublished, 10)
        remaining = bob.remote_participants["alice"].track_publications.values()
        assert [p.source for p in remaining] == [rtc.TrackSource.SOURCE_SCREENSHARE]
    finally:
        for f in feeders:
            f.cancel()


async def test_data_text_streams_and_rpc(lk, rooms):
    alice = await join(lk, rooms, "alice", "data-room")
    bob = await join(lk, rooms, "bob", "data-room")
    carol = await join(lk, rooms, "carol", "data-room")
    await until(lambda: {"bob", "carol"} <= set(alice.remote_participants))

    # broadcast, reliable and lossy
    for reliable in (True, False):
        at_bob = waiter(bob, "data_received", lambda p: p.topic == f"t{reliable}")
        at_carol = waiter(carol, "data_received", lambda p: p.topic == f"t{reliable}")
        await alice.local_participant.publish_data(b"hi all", reliable=reliable, topic=f"t{reliable}")
        for fut in (at_bob, at_carol):
            pkt = await asyncio.wait_for(fut, 10)
            assert pkt.data == b"hi all" and pkt.participant.identity == "alice"

    # destination_identities: only bob gets it
    carol_got: list = []
    carol.on("data_received", lambda p: carol_got.append(p) if p.topic == "private" else None)
    at_bob = waiter(bob, "data_received", lambda p: p.topic == "private")
    await alice.local_participant.publish_data(b"psst", destination_identities=["bob"], topic="private")
    assert (await asyncio.wait_for(at_bob, 10)).data == b"psst"
    # a later broadcast reaches carol; the private packet, sent before it, never did
    after = waiter(carol, "data_received", lambda p: p.topic == "after")
    await alice.local_participant.publish_data(b"x", topic="after")
    await asyncio.wait_for(after, 10)
    assert carol_got == []

    # text stream (what livekit-agents uses for lk.transcription / chat)
    text = asyncio.get_running_loop().create_future()
    async def read(reader, identity):
        text.set_result((await reader.read_all(), identity))
    bob.register_text_stream_handler(
        "lk.chat", lambda reader, identity: asyncio.ensure_future(read(reader, identity)))
    long_text = "héllo " * 5000  # several chunks
    await alice.local_participant.send_text(long_text, topic="lk.chat")
    assert await asyncio.wait_for(text, 10) == (long_text, "alice")

    # RPC round trip
    @bob.local_participant.register_rpc_method("greet")
    async def greet(data: rtc.RpcInvocationData) -> str:
        return f"hello {data.caller_identity}, you said {data.payload}"

    reply = await alice.local_participant.perform_rpc(
        destination_identity="bob", method="greet", payload="ping")
    assert reply == "hello alice, you said ping"


async def test_attributes_metadata_name_and_kinds(lk, rooms):
    alice = await join(lk, rooms, "alice", "attr-room")
    bob = await join(lk, rooms, "bob", "attr-room")
    await until(lambda: "alice" in bob.remote_participants)

    attrs = waiter(bob, "participant_attributes_changed", lambda changed, p: "mood" in changed)
    await alice.local_participant.set_attributes({"mood": "happy", "lang": "en"})
    changed, who = await asyncio.wait_for(attrs, 10)
    assert who.identity == "alice" and changed["mood"] == "happy"
    assert bob.remote_participants["alice"].attributes == {"mood": "happy", "lang": "en"}

    meta = waiter(bob, "participant_metadata_changed")
    await alice.local_participant.set_metadata('{"role": "caller"}')
    _, new = (await asyncio.wait_for(meta, 10))[1:]
    assert new == '{"role": "caller"}'

    name = waiter(bob, "participant_name_changed")
    await alice.local_participant.set_name("Alice Liddell")
    await asyncio.wait_for(name, 10)
    assert bob.remote_participants["alice"].name == "Alice Liddell"

    # the server side sees the same, and server-side updates reach the clients
    room = lk.rooms.get_room("attr-room")
    assert room.participants["alice"].attributes["lang"] == "en"
    meta2 = waiter(alice, "participant_metadata_changed")
    await room.update_participant("bob", metadata="set by server")
    assert (await asyncio.wait_for(meta2, 10))[0].identity == "bob"

    # without the grant, a participant may not change its own metadata
    eve = await join(lk, rooms, "eve", "attr-room", can_update_own_metadata=False)
    await asyncio.wait_for(eve.local_participant.set_metadata("nope"), 10)  # answered NOT_ALLOWED
    assert room.participants["eve"].metadata == ""

    # kinds come from the token's kind claim
    joined = waiter(bob, "participant_connected", lambda p: p.identity == "phone")
    await join(lk, rooms, "phone", "attr-room", kind="sip")
    assert (await asyncio.wait_for(joined, 10)).kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    assert bob.remote_participants["eve"].metadata == ""  # the refused update never went out

    # a participant that leaves is gone for the others
    gone = waiter(bob, "participant_disconnected", lambda p: p.identity == "alice")
    await alice.disconnect()
    await asyncio.wait_for(gone, 10)


async def test_server_side_mute_remove_and_delete(lk, rooms):
    """What RoomService calls do, seen by the clients (leave reasons included)."""
    alice = await join(lk, rooms, "alice", "admin-room")
    bob = await join(lk, rooms, "bob", "admin-room")
    carol = await join(lk, rooms, "carol", "admin-room")
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    subscribed = waiter(bob, "track_subscribed")
    pub = await alice.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    await asyncio.wait_for(subscribed, 10)
    room = lk.rooms.get_room("admin-room")

    muted = waiter(bob, "track_muted", lambda part, p: p.sid == pub.sid)
    info = await room.mute_published_track("alice", pub.sid, True)
    assert info.muted
    await asyncio.wait_for(muted, 10)
    await until(lambda: pub.muted)  # the publisher's SDK was told to mute

    removed = waiter(alice, "disconnected")
    gone = waiter(bob, "participant_disconnected", lambda p: p.identity == "alice")
    await room.remove_participant("alice")
    assert await asyncio.wait_for(removed, 10) == rtc.DisconnectReason.PARTICIPANT_REMOVED
    await asyncio.wait_for(gone, 10)

    deleted = [waiter(r, "disconnected") for r in (bob, carol)]
    await lk.rooms.delete_room("admin-room")
    for fut in deleted:
        assert await asyncio.wait_for(fut, 10) == rtc.DisconnectReason.ROOM_DELETED
    assert lk.rooms.get_room("admin-room") is None


async def test_tokens_are_verified(lk):
    bad_secret = token(lk, "mallory", "secure-room", secret="x" * 40)
    with pytest.raises(Exception):
        await rtc.Room().connect(lk.url, bad_secret)
    expired = token(lk, "mallory", "secure-room", ttl=datetime.timedelta(minutes=-5))
    with pytest.raises(Exception):
        await rtc.Room().connect(lk.url, expired)
    assert lk.rooms.get_room("secure-room") is None

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lk.http_url}/rtc/validate", params={"access_token": expired}) as r:
            assert r.status == 401
            assert "expired" in await r.text()
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get(f"{lk.http_url}/rtc/validate", params={"access_token": bad_secret}) as r:
            assert r.status == 401
            assert "signature is invalid" in await r.text()
        # the signal connection itself is refused before the upgrade, as livekit-server does
        for bad, reason in ((bad_secret, "signature is invalid"), (expired, "expired")):
            for how in ({"params": {"access_token": bad}}, {"headers": {"Authorization": f"Bearer {bad}"}}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(f"{lk.url}/rtc", **how)
                assert refused.value.status == 401, (reason, how)
        ok = token(lk, "alice", "secure-room")
        async with http.get(f"{lk.http_url}/rtc/validate", params={"access_token": ok}) as r:
            assert r.status == 200
        # no single-PC v1 protocol: 404 (with CORS) sends browsers to /rtc
        async with http.get(f"{lk.http_url}/rtc/v1/validate", params={"access_token": ok}) as r:
            assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get(f"{lk.http_url}/no/such/path") as r:
            assert r.status == 404 and r.headers["Access-Control-Allow-Origin"] == "*"


async def test_byte_streams_send_file_and_stream_bytes(lk, rooms, tmp_path):
    alice = await join(lk, rooms, "alice", "bytes-room")
    bob = await join(lk, rooms, "bob", "bytes-room")

    received: asyncio.Queue = asyncio.Queue()

    async def read(reader: rtc.ByteStreamReader, identity: str) -> None:
        data = b"".join([chunk async for chunk in reader])
        await received.put((reader.info, identity, data))

    for topic in ("fixture.files", "fixture.live"):
        bob.register_byte_stream_handler(
            topic, lambda reader, identity: asyncio.ensure_future(read(reader, identity)))

    # a file: random bytes (nothing to compress away), many chunks
    payload = os.urandom(200_000)
    path = tmp_path / "recording.bin"
    path.write_bytes(payload)
    sent = await alice.local_participant.send_file(
        str(path), topic="fixture.files", attributes={"call": "42"})
    info, sender, data = await asyncio.wait_for(received.get(), 10)
    assert sender == "alice"
    assert len(data) == len(payload) and data == payload
    assert (info.topic, info.name, info.stream_id) == ("fixture.files", "recording.bin", sent.stream_id)
    assert info.attributes.get("call") == "42"

    # a stream written piece by piece
    parts = [bytes([i]) * 7000 for i in range(8)]
    writer = await alice.local_participant.stream_bytes(
        "live.pcm", topic="fixture.live", mime_type="audio/pcm", total_size=sum(map(len, parts)))
    for part in parts:
        await writer.write(part)
    await writer.aclose()
    info, sender, data = await asyncio.wait_for(received.get(), 10)
    assert sender == "alice" and data == b"".join(parts)
    assert (info.topic, info.name, info.mime_type, info.size) == (
        "fixture.live", "live.pcm", "audio/pcm", 56_000)
    assert received.empty()  # each stream arrived once


async def test_auto_subscribe_off_gets_no_track_until_it_subscribes(lk, rooms):
    alice = await join(lk, rooms, "alice", "manual-sub-room")
    bob = await join(lk, rooms, "bob", "manual-sub-room", options=rtc.RoomOptions(auto_subscribe=False))
    carol = await join(lk, rooms, "carol", "manual-sub-room")  # auto-subscribes: the control
    bob_tracks: list = []
    bob.on("track_subscribed", lambda *args: bob_tracks.append(args))
    announced = waiter(bob, "track_published")
    at_carol = waiter(carol, "track_subscribed")

    pub, feeder = await publish_tone(alice.local_participant)
    try:
        remote_pub, publisher = await asyncio.wait_for(announced, 10)
        assert publisher.identity == "alice" and remote_pub.sid == pub.sid
        await asyncio.wait_for(at_carol, 10)  # the track is live for those who auto-subscribe
        await asyncio.sleep(0.5)  # time for a wrongly forwarded track to reach bob too
        assert bob_tracks == [] and not remote_pub.subscribed and remote_pub.track is None
        server_track = lk.rooms.get_room("manual-sub-room").participants["alice"].tracks[pub.sid]
        assert server_track.subscribers == {"carol"}

        got = waiter(bob, "track_subscribed")
        remote_pub.set_subscribed(True)
        remote_track, sub_pub, who = await asyncio.wait_for(got, 10)
        assert sub_pub.sid == pub.sid and who.identity == "alice" and remote_pub.subscribed
        assert_440hz(await capture(remote_track))
        assert server_track.subscribers == {"carol", "bob"}

        dropped = waiter(bob, "track_unsubscribed", lambda t, p, part: p.sid == pub.sid)
        remote_pub.set_subscribed(False)
        await asyncio.wait_for(dropped, 10)
        await until(lambda: server_track.subscribers == {"carol"})
    finally:
        feeder.cancel()


async def raw_signal_join(http: aiohttp.ClientSession, lk, identity: str, room: str):
    """A signal connection without an SDK: -> (websocket, JoinResponse)."""
    ws = await http.ws_connect(f"{lk.url}/rtc", params={
        "access_token": token(lk, identity, room), "protocol": "16", "auto_subscribe": "1"})
    msg = await ws.receive(timeout=10)
    res = proto_rtc.SignalResponse()
    res.ParseFromString(msg.data)
    assert res.WhichOneof("message") == "join"
    return ws, res.join


async def test_ping_timeout_drops_a_silent_client_and_leave_reasons(lk, rooms, monkeypatch):
    # the server's ping settings are constants (livekit-server's 5 s / 15 s); shorter ones
    # keep this test short. They apply to every signal connection of this process, which
    # is why this test runs before the agent workers' tests (their agents ping every 5 s).
    monkeypatch.setattr(lk_signal, "PING_INTERVAL", 1)
    monkeypatch.setattr(lk_signal, "PING_TIMEOUT", 2)
    bob = await join(lk, rooms, "bob", "ping-room")  # the SDK pings every 1 s and stays
    alice = await join(lk, rooms, "alice", "ping-room")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        silent, join_res = await raw_signal_join(http, lk, "silent", "ping-room")
        joined_at = loop.time()
        assert (join_res.ping_interval, join_res.ping_timeout) == (1, 2)
        pinger, _ = await raw_signal_join(http, lk, "pinger", "ping-room")
        pinger_joined_at = loop.time()
        await until(lambda: {"silent", "pinger", "alice"} <= set(bob.remote_participants))
        dropped = waiter(bob, "participant_disconnected", lambda p: p.identity == "silent")

        pongs: list[int] = []
        async def ping_and_read() -> None:
            async def ping():
                for i in range(1, 1000):
                    await pinger.send_bytes(proto_rtc.SignalRequest(
                        ping_req=proto_rtc.Ping(timestamp=i)).SerializeToString())
                    await asyncio.sleep(0.5)
            pinging = asyncio.create_task(ping())
            try:
                async for msg in pinger:
                    res = proto_rtc.SignalResponse()
                    res.ParseFromString(msg.data)
                    if res.WhichOneof("message") == "pong_resp":
                        pongs.append(res.pong_resp.last_ping_timestamp)
            finally:
                pinging.cancel()
        pinger_task = asyncio.create_task(ping_and_read())

        async def drain(ws) -> None:
            async for _ in ws:
                pass
        try:
            gone = await asyncio.wait_for(dropped, 10)
            assert loop.time() - joined_at >= 1.8  # not before the timeout
            assert gone.disconnect_reason == rtc.DisconnectReason.SIGNAL_CLOSE
            await asyncio.wait_for(drain(silent), 5)  # the server closed its socket
            assert silent.closed

            # the client that pings outlives the timeout twice over
            await until(lambda: loop.time() - pinger_joined_at > 4, timeout=10)
            assert "pinger" in bob.remote_participants and not pinger.closed
            assert pongs[:3] == [1, 2, 3]  # each ping answered with its timestamp

            # a client's own leave is CLIENT_INITIATED for the others: raw protocol ...
            left = waiter(bob, "participant_disconnected", lambda p: p.identity == "pinger")
            await pinger.send_bytes(proto_rtc.SignalRequest(
                leave=proto_rtc.LeaveRequest(reason=proto_models.CLIENT_INITIATED)).SerializeToString())
            assert (await asyncio.wait_for(left, 10)).disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
            # ... and the SDK's disconnect()
            left = waiter(bob, "participant_disconnected", lambda p: p.identity == "alice")
            await alice.disconnect()
            assert (await asyncio.wait_for(left, 10)).disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
            assert "bob" in lk.rooms.get_room("ping-room").participants
        finally:
            pinger_task.cancel()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def workers(lk, tmp_path_factory):
    """Two real agent workers: one automatic (no agent name), one named. Their jobs
    append a line to `job_log` when they end (see livekit_worker_fixture.py)."""
    job_log = tmp_path_factory.mktemp("agent-jobs") / "ended.log"
    job_log.touch()
    env = dict(os.environ, LIVEKIT_URL=lk.url, LIVEKIT_API_KEY=lk.api_key,
               LIVEKIT_API_SECRET=lk.api_secret, PYTHONPATH=str(REPO), FIXTURE_JOB_LOG=str(job_log))
    procs = [subprocess.Popen([sys.executable, str(HERE / "livekit_worker_fixture.py"), name],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in ("", "named-agent")]
    try:
        await lk.workers.wait_for_worker("", timeout=30)
        await lk.workers.wait_for_worker("named-agent", timeout=30)
        yield SimpleNamespace(procs=procs, job_log=job_log)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def ended_jobs(workers) -> dict[str, tuple[str, str]]:
    """job id -> (room, shutdown reason) of every job the fixture workers ended."""
    out = {}
    for line in workers.job_log.read_text().splitlines():
        job_id, room_name, reason = line.split(" ", 2)
        out[job_id] = (room_name, reason.removeprefix("ended: "))
    return out


def agent_hello(room: rtc.Room, label: str) -> asyncio.Future:
    """Resolves with the agent participant once it sent "hello from <label>".
    Call before the agent can be dispatched, so no message is missed."""
    hello = asyncio.get_running_loop().create_future()

    async def read(reader, identity):
        txt = await reader.read_all()
        if txt == f"hello from {label}" and not hello.done():
            # data and signal travel separately: wait until the participant is known
            await until(lambda: identity in room.remote_participants)
            hello.set_result(room.remote_participants[identity])

    room.register_text_stream_handler(
        "fixture.hello", lambda reader, identity: asyncio.ensure_future(read(reader, identity)))
    return hello


async def join_expecting_agent(lk, rooms, identity, room_name, label, **kw):
    """Connect (which may dispatch agents) with the hello handler already in place."""
    r = rtc.Room()
    hello = agent_hello(r, label)
    await r.connect(lk.url, token(lk, identity, room_name, **kw))
    rooms.append(r)
    return r, hello


async def test_agent_automatic_dispatch(lk, rooms, workers):
    user, hello = await join_expecting_agent(lk, rooms, "user", "auto-dispatch-room", "automatic")
    agent = await asyncio.wait_for(hello, 20)
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await until(lambda: agent.attributes.get("fixture.agent") == "automatic")
    # the named worker was not sent here
    assert all(p.attributes.get("fixture.agent") != "named-agent" for p in user.remote_participants.values())
    dispatches = lk.rooms.list_dispatches("auto-dispatch-room")
    assert [d.agent_name for d in dispatches] == [""]
    assert dispatches[0].state.jobs[0].state.participant_identity == agent.identity


async def test_agent_explicit_dispatch_by_token_room_config(lk, rooms, workers):
    cfg = proto_room.RoomConfiguration(
        agents=[RoomAgentDispatch(agent_name="named-agent", metadata='{"topic": "tests"}')])
    user, hello = await join_expecting_agent(
        lk, rooms, "user", "named-dispatch-room", "named-agent", room_config=cfg)
    agent = await asyncio.wait_for(hello, 20)
    assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    await until(lambda: agent.attributes.get("fixture.job_metadata") == '{"topic": "tests"}')
    assert agent.attributes["lk.agent.name"] == "named-agent"
    # explicit dispatch replaces the automatic one
    assert [p.attributes.get("fixture.agent") for p in user.remote_participants.values()] == ["named-agent"]


async def test_dispatch_agent_api_and_room_close_ends_the_job(lk, rooms, workers):
    user, hello = await join_expecting_agent(
        lk, rooms, "user", "api-dispatch-room", "named-agent",
        room_config=proto_room.RoomConfiguration(departure_timeout=1))
    dispatch = await lk.rooms.dispatch_agent("api-dispatch-room", "named-agent", metadata="via api")
    assert dispatch.agent_name == "named-agent" and dispatch.id.startswith("AD_")
    agent = await asyncio.wait_for(hello, 20)
    room = lk.rooms.get_room("api-dispatch-room")
    assert room.participants[agent.identity].kind == proto_models.ParticipantInfo.AGENT
    (job,) = [j for j in room.jobs.values() if j.state.participant_identity == agent.identity]
    assert ended_jobs(workers).get(job.id) is None  # the job runs

    # last human leaves -> departure_timeout (1 s) -> room closed, agent job ended
    await user.disconnect()
    await until(lambda: lk.rooms.get_room("api-dispatch-room") is None, timeout=15)
    assert room.closed and not room.participants
    assert all(j.state.status != proto_agent.JS_RUNNING for j in room.jobs.values())
    # ... and the worker really ended it: the job's shutdown callbacks ran
    await until(lambda: job.id in ended_jobs(workers), timeout=10)
    assert ended_jobs(workers)[job.id][0] == "api-dispatch-room"


async def test_empty_timeout_closes_a_room_nobody_joined(lk):
    closed = asyncio.get_running_loop().create_future()
    lk.rooms.on("room_finished",
                lambda room: room.name == "never-joined" and not closed.done() and closed.set_result(room))
    room = lk.rooms.create_room("never-joined", empty_timeout=1)
    assert lk.rooms.create_room("never-joined") is room  # idempotent
    # the automatic agent may join it: agents alone do not keep a room open
    assert await asyncio.wait_for(closed, 10) is room
    assert lk.rooms.get_room("never-joined") is None


async def test_agent_dispatch_service_create_dispatch_reaches_a_worker(lk, rooms, workers):
    """AgentDispatchService.CreateDispatch over Twirp, as a backend calls it."""
    user, hello = await join_expecting_agent(
        lk, rooms, "user", "twirp-dispatch-room", "named-agent",
        room_config=proto_room.RoomConfiguration(departure_timeout=1))
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
        d = await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
            agent_name="named-agent", room="twirp-dispatch-room", metadata="via twirp"))
        assert d.id.startswith("AD_") and d.agent_name == "named-agent"
        agent = await asyncio.wait_for(hello, 20)
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        await until(lambda: agent.attributes.get("fixture.job_metadata") == "via twirp")
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="twirp-dispatch-room"))
        assert [p.kind for p in listed.participants if p.identity == agent.identity] == [
            proto_models.ParticipantInfo.AGENT]
        (got,) = [x for x in await lkapi.agent_dispatch.list_dispatch("twirp-dispatch-room") if x.id == d.id]
        assert [j.state.participant_identity for j in got.state.jobs] == [agent.identity]


class RawWorker:
    """An agent worker without livekit-agents: livekit.protocol.agent messages over
    /agent. It reports whatever status it is told to, records the jobs it is offered
    and accepts every one, so a job offered to it never reaches a real worker."""

    def __init__(self, lk, agent_name: str) -> None:
        self.lk, self.agent_name = lk, agent_name
        self.offers: list[proto_agent.Job] = []
        self.assignments: list[proto_agent.JobAssignment] = []

    async def __aenter__(self) -> "RawWorker":
        self.http = aiohttp.ClientSession()
        jwt = api.AccessToken(self.lk.api_key, self.lk.api_secret).with_grants(
            api.VideoGrants(agent=True)).to_jwt()
        self.ws = await self.http.ws_connect(f"{self.lk.url}/agent", headers={"Authorization": f"Bearer {jwt}"})
        await self.send(register=proto_agent.RegisterWorkerRequest(
            type=proto_agent.JT_ROOM, agent_name=self.agent_name, version="raw"))
        first = proto_agent.ServerMessage()
        first.ParseFromString((await self.ws.receive(timeout=10)).data)
        assert first.WhichOneof("message") == "register"
        self.id = first.register.worker_id
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()

    async def send(self, **message: Any) -> None:
        await self.ws.send_bytes(proto_agent.WorkerMessage(**message).SerializeToString())

    async def _read(self) -> None:
        async for msg in self.ws:
            m = proto_agent.ServerMessage()
            m.ParseFromString(msg.data)
            if m.WhichOneof("message") == "availability":
                self.offers.append(m.availability.job)
                await self.send(availability=proto_agent.AvailabilityResponse(
                    job_id=m.availability.job.id, available=True,
                    participant_identity=f"raw-{m.availability.job.id}"))
            elif m.WhichOneof("message") == "assignment":
                self.assignments.append(m.assignment)

    async def report(self, status: int, load: float) -> None:
        """UpdateWorkerStatus, then wait until the server has applied it."""
        await self.send(update_worker=proto_agent.UpdateWorkerStatus(status=status, load=load))
        await until(lambda: (w := self.lk.workers.workers.get(self.id)) is not None
                    and w.status == status and abs(w.load - load) < 1e-6)


async def test_a_full_worker_is_passed_over_for_an_available_one(lk, rooms, workers):
    """livekit-server offers a job only to workers whose last status is WS_AVAILABLE
    (livekit-agents reports WS_FULL once its load reaches load_threshold)."""
    async with RawWorker(lk, "named-agent") as full:
        # spare capacity alone would make it the favourite over the real worker
        await full.report(proto_agent.WS_FULL, 0.0)
        cfg = proto_room.RoomConfiguration(
            departure_timeout=1, agents=[RoomAgentDispatch(agent_name="named-agent")])
        joined = [await join_expecting_agent(lk, rooms, "user", f"busy-room-{i}", "named-agent",
                                             room_config=cfg) for i in range(4)]
        agents = await asyncio.wait_for(asyncio.gather(*(hello for _, hello in joined)), 20)
        assert all(a.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for a in agents)
        assert full.offers == []
        real = {w.id for w in lk.workers.workers.values() if w.agent_name == "named-agent"} - {full.id}
        for i in range(4):
            (d,) = lk.rooms.list_dispatches(f"busy-room-{i}")
            assert [j.state.worker_id in real for j in d.state.jobs] == [True]


async def test_a_job_for_full_workers_only_is_not_assigned(lk):
    """With no available worker for the agent name, livekit-server fails the job
    request ("no workers available") and the room runs without the agent."""
    async with RawWorker(lk, "lonely-agent") as w:
        await w.report(proto_agent.WS_FULL, 0.2)
        room = lk.rooms.create_room("lonely-room", agents=[RoomAgentDispatch(agent_name="lonely-agent")])
        try:
            await asyncio.sleep(0.5)  # the server decides at once; give a wrong offer time to arrive
            assert w.offers == []
            assert [d.state.jobs for d in lk.rooms.list_dispatches("lonely-room")] == [[]]

            # available again: the next dispatch is offered to it, and assigned
            await w.report(proto_agent.WS_AVAILABLE, 0.2)
            d = await lk.rooms.dispatch_agent("lonely-room", "lonely-agent", metadata="second")
            await until(lambda: len(w.assignments) == 1)
            assert [(j.dispatch_id, j.metadata) for j in w.offers] == [(d.id, "second")]
            assignment = w.assignments[0]
            assert assignment.job.id == w.offers[0].id and assignment.job.room.name == "lonely-room"
            claims = api.TokenVerifier(lk.api_key, lk.api_secret).verify(assignment.token)
            assert (claims.identity, claims.kind, claims.video.room) == (
                f"raw-{assignment.job.id}", "agent", "lonely-room")
            assert [len(x.state.jobs) for x in lk.rooms.list_dispatches("lonely-room")] == [0, 1]

            # a worker that says it is available at full load (a dev-mode worker whose
            # CPU is saturated does: its load_threshold is infinite) still gets jobs,
            # as with livekit-server, which selects by status alone
            await w.report(proto_agent.WS_AVAILABLE, 1.0)
            d3 = await lk.rooms.dispatch_agent("lonely-room", "lonely-agent", metadata="third")
            await until(lambda: len(w.assignments) == 2, timeout=5)
            assert w.offers[-1].dispatch_id == d3.id
        finally:
            await lk.rooms.delete_room(room.name)
