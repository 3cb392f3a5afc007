"""RoomService and AgentDispatchService of the local LiveKit server, driven by the real
``livekit.api.LiveKitAPI`` client, with real ``livekit.rtc.Room`` participants where
the effect is something a client sees."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from livekit import api, rtc

from devstack.livekit import LocalLiveKitServer, load_config

REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # generous bound for anything that should happen "soon"


@pytest.fixture
async def lk() -> AsyncIterator[Any]:
    async with LocalLiveKitServer(load_config(REPO / "livekit.yaml", port=0)) as server:
        yield server


@pytest.fixture
async def lkapi(lk) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as client:
        yield client


def room_name() -> str:
    return f"room-{uuid.uuid4().hex[:8]}"


class Participant:
    """A connected rtc.Room that records the events tests wait for."""

    def __init__(self, room: rtc.Room, identity: str) -> None:
        self.room = room
        self.identity = identity
        self.events: asyncio.Queue[tuple[str, tuple]] = asyncio.Queue()
        self.seen: list[tuple[str, tuple]] = []
        for name in (
            "participant_metadata_changed",
            "participant_name_changed",
            "participant_attributes_changed",
            "participant_permissions_changed",
            "room_metadata_changed",
            "data_received",
            "track_muted",
            "track_unmuted",
            "disconnected",
            "participant_disconnected",
        ):
            room.on(name, self._recorder(name))

    def _recorder(self, name: str):
        def record(*args: Any) -> None:
            self.events.put_nowait((name, args))

        return record

    async def next(self, name: str, where=lambda *a: True, timeout: float = WAIT) -> tuple:
        """Wait for the next event `name` whose arguments satisfy `where`."""
        for ev in self.seen:
            if ev[0] == name and where(*ev[1]):
                self.seen.remove(ev)
                return ev[1]

        async def wait() -> tuple:
            while True:
                ev = await self.events.get()
                if ev[0] == name and where(*ev[1]):
                    return ev[1]
                self.seen.append(ev)

        return await asyncio.wait_for(wait(), timeout)

    async def nothing(self, name: str, settle: float = 1.0) -> list[tuple]:
        """Everything of kind `name` that arrives within `settle` seconds."""
        await asyncio.sleep(settle)
        got = [ev[1] for ev in self.seen if ev[0] == name]
        while not self.events.empty():
            ev = self.events.get_nowait()
            if ev[0] == name:
                got.append(ev[1])
        return got


async def join(lk, room: str, identity: str, **token_kw: Any) -> Participant:
    token = (
        api.AccessToken(lk.api_key, lk.api_secret)
        .with_identity(identity)
        .with_name(token_kw.pop("name", identity))
        .with_metadata(token_kw.pop("metadata", ""))
        .with_grants(api.VideoGrants(room_join=True, room=room, **token_kw))
        .to_jwt()
    )
    r = rtc.Room()
    p = Participant(r, identity)
    await r.connect(lk.url, token)
    return p


@pytest.fixture
async def people() -> AsyncIterator[list[Participant]]:
    joined: list[Participant] = []
    yield joined
    for p in joined:
        await p.room.disconnect()


async def until(predicate, timeout: float = WAIT, what: str = "condition") -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} did not happen within {timeout} s") from None


async def room_names(lkapi: api.LiveKitAPI, *names: str) -> set[str]:
    res = await lkapi.room.list_rooms(api.ListRoomsRequest(names=list(names)))
    return {r.name for r in res.rooms}


# ------------------------------------------------------------------ rooms


async def test_create_room_returns_and_lists_its_settings(lk, lkapi) -> None:
    name = room_name()
    created = await lkapi.room.create_room(
        api.CreateRoomRequest(
            name=name, empty_timeout=120, departure_timeout=7, max_participants=3, metadata="hello"
        )
    )
    assert created.name == name and created.sid.startswith("RM_")
    assert (created.empty_timeout, created.departure_timeout, created.max_participants) == (120, 7, 3)
    assert created.metadata == "hello"

    other = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=other))
    listed = (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms
    assert [(r.name, r.sid, r.metadata, r.max_participants) for r in listed] == [
        (name, created.sid, "hello", 3)
    ]
    assert {name, other} <= await room_names(lkapi)
    assert await room_names(lkapi, "no-such-room") == set()

    again = await lkapi.room.create_room(api.CreateRoomRequest(name=name, metadata="ignored"))
    assert again.sid == created.sid  # CreateRoom of an existing room returns it


async def test_room_metadata_from_create_reaches_participants(lk, lkapi, people) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name, metadata="from-create"))
    people.append(alice := await join(lk, name, "alice"))
    assert alice.room.metadata == "from-create"


async def test_max_participants_refuses_one_more(lk, lkapi, people) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name, max_participants=1))
    people.append(await join(lk, name, "first"))
    with pytest.raises(rtc.ConnectError):
        people.append(await join(lk, name, "second"))
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=name))
    assert [p.identity for p in listed.participants] == ["first"]


async def test_empty_timeout_closes_a_room_nobody_joined(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=1))
    assert await room_names(lkapi, name) == {name}
    await until(lambda: _gone(lkapi, name), what="closing of the never-joined room")


async def test_departure_timeout_closes_the_room_after_the_last_one_left(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(
        api.CreateRoomRequest(name=name, empty_timeout=300, departure_timeout=1)
    )
    p = await join(lk, name, "visitor")
    await p.room.disconnect()
    await until(lambda: _gone(lkapi, name), what="closing of the room after departure")


async def _gone(lkapi: api.LiveKitAPI, name: str) -> bool:
    return name not in await room_names(lkapi, name)


async def test_delete_room_disconnects_everyone(lk, lkapi, people) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
    (reason,) = await alice.next("disconnected")
    assert reason == rtc.DisconnectReason.ROOM_DELETED
    assert await room_names(lkapi, name) == set()
    with pytest.raises(api.TwirpError) as e:
        await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
    assert (e.value.code, e.value.status) == ("not_found", 404)
    assert name in e.value.message


# ------------------------------------------------------------ participants


async def test_list_and_get_participants(lk, lkapi, people) -> None:
    name = room_name()
    people.append(await join(lk, name, "alice", name="Alice A.", metadata='{"a":1}'))
    people.append(await join(lk, name, "bob"))

    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=name))
    assert sorted(p.identity for p in listed.participants) == ["alice", "bob"]

    alice = await lkapi.room.get_participant(api.RoomParticipantIdentity(room=name, identity="alice"))
    assert (alice.identity, alice.name, alice.metadata) == ("alice", "Alice A.", '{"a":1}')
    assert alice.sid.startswith("PA_")
    assert alice.sid == people[0].room.local_participant.sid


async def test_update_participant_metadata_name_and_attributes_reach_clients(
    lk, lkapi, people
) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    people.append(bob := await join(lk, name, "bob"))

    info = await lkapi.room.update_participant(
        api.UpdateParticipantRequest(
            room=name, identity="alice", metadata="new-meta", name="Alice",
            attributes={"mood": "happy", "lang": "en"},
        )
    )
    assert (info.metadata, info.name, dict(info.attributes)) == (
        "new-meta", "Alice", {"mood": "happy", "lang": "en"})

    # the participant itself and the others see the change
    for viewer in (alice, bob):
        p, _old, new = await viewer.next(
            "participant_metadata_changed", lambda p, o, n: p.identity == "alice")
        assert new == "new-meta"
        await viewer.next("participant_name_changed",
                          lambda p, o, n: p.identity == "alice" and n == "Alice")
        await viewer.next("participant_attributes_changed",
                          lambda ch, p: p.identity == "alice" and ch.get("mood") == "happy")
    assert alice.room.local_participant.attributes == {"mood": "happy", "lang": "en"}
    assert bob.room.remote_participants["alice"].metadata == "new-meta"

    # attributes merge; an empty value deletes a key; empty metadata leaves it alone
    info = await lkapi.room.update_participant(
        api.UpdateParticipantRequest(room=name, identity="alice", attributes={"lang": "", "x": "1"})
    )
    assert (info.metadata, dict(info.attributes)) == ("new-meta", {"mood": "happy", "x": "1"})
    await bob.next("participant_attributes_changed",
                   lambda ch, p: p.identity == "alice" and ch.get("x") == "1")
    assert bob.room.remote_participants["alice"].attributes == {"mood": "happy", "x": "1"}


async def test_update_participant_permission_reaches_the_participant(lk, lkapi, people) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    perm = api.ParticipantPermission(can_subscribe=True, can_publish=False, can_publish_data=False)
    info = await lkapi.room.update_participant(
        api.UpdateParticipantRequest(room=name, identity="alice", permission=perm)
    )
    assert (info.permission.can_publish, info.permission.can_publish_data) == (False, False)
    await alice.next("participant_permissions_changed",
                     lambda p, *rest: p.identity == "alice")
    assert alice.room.local_participant.permissions.can_publish is False


async def test_remove_participant_disconnects_it(lk, lkapi, people) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    people.append(bob := await join(lk, name, "bob"))

    await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=name, identity="alice"))

    (reason,) = await alice.next("disconnected")
    assert reason == rtc.DisconnectReason.PARTICIPANT_REMOVED
    await bob.next("participant_disconnected", lambda p: p.identity == "alice")
    listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=name))
    assert [p.identity for p in listed.participants] == ["bob"]


# ------------------------------------------------------------------ tracks


async def test_mute_published_track_mutes_it_for_publisher_and_subscribers(
    lk, lkapi, people
) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    people.append(bob := await join(lk, name, "bob"))
    source = rtc.AudioSource(48000, 1)
    track = rtc.LocalAudioTrack.create_audio_track("mic", source)
    pub = await alice.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    silence = rtc.AudioFrame(bytes(960), 48000, 1, 480)

    async def feed() -> None:
        while True:
            await source.capture_frame(silence)
            await asyncio.sleep(0.01)

    feeder = asyncio.create_task(feed())
    try:
        await until(lambda: _has_track(lkapi, name, "alice", pub.sid), what="publication")
        res = await lkapi.room.mute_published_track(
            api.MuteRoomTrackRequest(room=name, identity="alice", track_sid=pub.sid, muted=True))
        assert res.track.sid == pub.sid and res.track.muted

        await alice.next("track_muted", lambda p, publication: publication.sid == pub.sid)
        assert pub.muted
        await bob.next("track_muted",
                       lambda p, publication: p.identity == "alice" and publication.sid == pub.sid)
        info = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room=name, identity="alice"))
        assert [t.muted for t in info.tracks if t.sid == pub.sid] == [True]

        # as livekit-server by default: a remote unmute is refused
        with pytest.raises(api.TwirpError) as e:
            await lkapi.room.mute_published_track(
                api.MuteRoomTrackRequest(room=name, identity="alice", track_sid=pub.sid, muted=False))
        assert e.value.code == "failed_precondition" and "unmute" in e.value.message

        with pytest.raises(api.TwirpError) as e:
            await lkapi.room.mute_published_track(
                api.MuteRoomTrackRequest(room=name, identity="alice", track_sid="TR_nope", muted=True))
        assert (e.value.code, e.value.status) == ("not_found", 404)
        assert "TR_nope" in e.value.message
    finally:
        feeder.cancel()


async def _has_track(lkapi: api.LiveKitAPI, room: str, identity: str, sid: str) -> bool:
    info = await lkapi.room.get_participant(api.RoomParticipantIdentity(room=room, identity=identity))
    return any(t.sid == sid for t in info.tracks)


# -------------------------------------------------------------------- data


async def test_send_data_reaches_everyone_or_only_the_destinations(lk, lkapi, people) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    people.append(bob := await join(lk, name, "bob"))

    await lkapi.room.send_data(api.SendDataRequest(
        room=name, data=b"to all", kind=api.DataPacket.Kind.RELIABLE, topic="news"))
    for p in (alice, bob):
        (packet,) = await p.next("data_received", lambda d: d.data == b"to all")
        assert packet.topic == "news"
        assert packet.participant is None  # sent by the server, not a participant
        assert packet.kind == rtc.DataPacketKind.KIND_RELIABLE

    await lkapi.room.send_data(api.SendDataRequest(
        room=name, data=b"for bob", kind=api.DataPacket.Kind.LOSSY,
        destination_identities=["bob"], topic="private"))
    (packet,) = await bob.next("data_received", lambda d: d.data == b"for bob")
    assert (packet.topic, packet.kind) == ("private", rtc.DataPacketKind.KIND_LOSSY)
    assert [d for (d,) in await alice.nothing("data_received") if d.data == b"for bob"] == []


async def test_update_room_metadata_reaches_participants(lk, lkapi, people) -> None:
    name = room_name()
    people.append(alice := await join(lk, name, "alice"))
    room = await lkapi.room.update_room_metadata(
        api.UpdateRoomMetadataRequest(room=name, metadata='{"topic":"weather"}'))
    assert room.metadata == '{"topic":"weather"}'
    _old, new = await alice.next("room_metadata_changed")
    assert new == '{"topic":"weather"}'
    assert alice.room.metadata == '{"topic":"weather"}'
    assert [r.metadata for r in (await lkapi.room.list_rooms(api.ListRoomsRequest(names=[name]))).rooms] == [new]


# ---------------------------------------------------------- agent dispatch


async def test_create_room_with_agents_creates_their_dispatches(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(
        name=name, agents=[api.RoomAgentDispatch(agent_name="gemini-agent", metadata="m1")]))
    dispatches = await lkapi.agent_dispatch.list_dispatch(name)
    assert [(d.agent_name, d.metadata, d.room) for d in dispatches] == [("gemini-agent", "m1", name)]
    assert dispatches[0].id.startswith("AD_")


async def test_create_list_and_delete_dispatch(lk, lkapi) -> None:
    name = room_name()
    d = await lkapi.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="helper", room=name, metadata='{"task":1}'))
    assert (d.agent_name, d.room, d.metadata) == ("helper", name, '{"task":1}')
    assert d.id.startswith("AD_")
    assert name in await room_names(lkapi, name)  # the room was created for it

    listed = await lkapi.agent_dispatch.list_dispatch(name)
    assert d.id in [x.id for x in listed]
    assert (await lkapi.agent_dispatch.get_dispatch(d.id, name)).agent_name == "helper"

    deleted = await lkapi.agent_dispatch.delete_dispatch(d.id, name)
    assert deleted.id == d.id
    assert d.id not in [x.id for x in await lkapi.agent_dispatch.list_dispatch(name)]
    assert await lkapi.agent_dispatch.get_dispatch(d.id, name) is None

    with pytest.raises(api.TwirpError) as e:
        await lkapi.agent_dispatch.delete_dispatch(d.id, name)
    assert (e.value.code, e.value.status) == ("not_found", 404)
    assert d.id in e.value.message


# ------------------------------------------------------------------ errors


async def test_not_found_errors_name_what_is_missing(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name))
    cases = [
        (lkapi.room.list_participants(api.ListParticipantsRequest(room="nowhere")), "'nowhere'"),
        (lkapi.room.get_participant(api.RoomParticipantIdentity(room=name, identity="ghost")), "'ghost'"),
        (lkapi.room.remove_participant(api.RoomParticipantIdentity(room=name, identity="ghost")), "'ghost'"),
        (lkapi.room.update_participant(api.UpdateParticipantRequest(room=name, identity="ghost", metadata="x")), "'ghost'"),
        (lkapi.room.send_data(api.SendDataRequest(room="nowhere", data=b"x")), "'nowhere'"),
        (lkapi.room.update_room_metadata(api.UpdateRoomMetadataRequest(room="nowhere", metadata="x")), "'nowhere'"),
    ]
    for call, named in cases:
        with pytest.raises(api.TwirpError) as e:
            await call
        assert (e.value.code, e.value.status) == ("not_found", 404), e.value
        assert named in e.value.message and "not found" in e.value.message


async def test_bad_arguments_are_invalid_argument(lk, lkapi) -> None:
    with pytest.raises(api.TwirpError) as e:
        await lkapi.room.create_room(api.CreateRoomRequest(name=""))
    assert (e.value.code, e.value.status) == ("invalid_argument", 400)
    assert e.value.message == "room name is required"

    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name))
    with pytest.raises(api.TwirpError) as e:
        await lkapi.room.update_room_metadata(
            api.UpdateRoomMetadataRequest(room=name, metadata="x" * 70000))
    assert e.value.code == "invalid_argument"
    assert "metadata is 70000 bytes; the limit is 64000" in e.value.message


async def test_wrong_secret_or_unknown_key_is_unauthenticated(lk) -> None:
    async with api.LiveKitAPI(lk.http_url, lk.api_key, "x" * 40) as bad:
        with pytest.raises(api.TwirpError) as e:
            await bad.room.list_rooms(api.ListRoomsRequest())
    assert (e.value.code, e.value.status) == ("unauthenticated", 401)
    assert "signature" in e.value.message and lk.api_key in e.value.message

    async with api.LiveKitAPI(lk.http_url, "nokey", "x" * 40) as bad:
        with pytest.raises(api.TwirpError) as e:
            await bad.room.list_rooms(api.ListRoomsRequest())
    assert (e.value.code, e.value.message) == ("unauthenticated", "invalid API key: nokey")


async def test_missing_token_is_unauthenticated(lk) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{lk.http_url}/twirp/livekit.RoomService/ListRooms", json={}) as r:
            assert r.status == 401
            body = await r.json()
    assert body["code"] == "unauthenticated" and "Bearer" in body["msg"]


def _token(lk, **grants: Any) -> str:
    return (
        api.AccessToken(lk.api_key, lk.api_secret)
        .with_identity("ops")
        .with_grants(api.VideoGrants(**grants))
        .to_jwt()
    )


async def test_missing_grants_are_permission_denied(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name))
    join_only = _token(lk, room_join=True, room=name)
    other_room_admin = _token(lk, room_admin=True, room="another-room")
    cases = [
        (join_only, lambda c: c.room.create_room(api.CreateRoomRequest(name="x")), "roomCreate"),
        (join_only, lambda c: c.room.delete_room(api.DeleteRoomRequest(room=name)), "roomCreate"),
        (join_only, lambda c: c.room.list_rooms(api.ListRoomsRequest()), "roomList"),
        (join_only, lambda c: c.room.list_participants(api.ListParticipantsRequest(room=name)), "roomAdmin"),
        (other_room_admin, lambda c: c.room.list_participants(api.ListParticipantsRequest(room=name)), "another-room"),
        (other_room_admin, lambda c: c.agent_dispatch.list_dispatch(name), "another-room"),
        (join_only, lambda c: c.room.send_data(api.SendDataRequest(room=name, data=b"x")), "roomAdmin"),
    ]
    for token, call, named in cases:
        async with api.LiveKitAPI(lk.http_url, token=token) as client:
            with pytest.raises(api.TwirpError) as e:
                await call(client)
        assert (e.value.code, e.value.status) == ("permission_denied", 403), e.value
        assert named in e.value.message

    # the right grant for the right room works
    async with api.LiveKitAPI(lk.http_url, token=_token(lk, room_admin=True, room=name)) as c:
        assert (await c.room.list_participants(api.ListParticipantsRequest(room=name))).participants == []


async def test_json_requests_get_json_answers(lk, lkapi) -> None:
    name = room_name()
    await lkapi.room.create_room(api.CreateRoomRequest(name=name, metadata="j"))
    headers = {"Authorization": f"Bearer {_token(lk, room_list=True)}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{lk.http_url}/twirp/livekit.RoomService/ListRooms",
                          json={"names": [name]}, headers=headers) as r:
            assert r.status == 200 and r.content_type == "application/json"
            body = await r.json()
        assert [(x["name"], x["metadata"]) for x in body["rooms"]] == [(name, "j")]

        async with s.post(f"{lk.http_url}/twirp/livekit.RoomService/ListRooms",
                          data=b"{oops", headers={**headers, "Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "malformed"

        async with s.post(f"{lk.http_url}/twirp/livekit.RoomService/NoSuchMethod",
                          json={}, headers=headers) as r:
            assert r.status == 404
            assert json.loads(await r.text())["code"] == "bad_route"
