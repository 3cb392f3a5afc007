"""Room / participant / track state of the local LiveKit server, and its lifecycle.

This module is transport-free: the signal connection (signal.py) and the agent
worker registry (agent_workers.py) plug into it through two small interfaces,
``ParticipantSession`` and ``AgentDispatcher``. Everything a Twirp service needs
(RoomService, AgentDispatchService) is public here.

Public API (stable; used by devstack/livekit/twirp.py)::

    manager = RoomManager(config)                 # config: ServerConfig
    manager.rooms                                 # dict[name, Room] (read-only use)
    manager.get_room(name) -> Room | None
    manager.create_room(name, *, empty_timeout=None, departure_timeout=None,
                        max_participants=None, metadata="", agents=None) -> Room   # idempotent
    await manager.delete_room(name)               # everyone leaves with ROOM_DELETED
    await manager.dispatch_agent(room_name, agent_name, metadata="", attributes=None)
        -> agent_dispatch.AgentDispatch         # creates the room if needed
    manager.list_dispatches(room_name, dispatch_id="") -> list[AgentDispatch]  # with state.jobs
    await manager.delete_dispatch(room_name, dispatch_id) -> AgentDispatch    # NotFoundError
    manager.on(event, callback)                   # events listed in RoomManager.EVENTS

    room.sid .name .metadata .created_at .participants (dict[identity, Participant])
    room.to_proto() -> models.Room
    await room.update_metadata(metadata)
    await room.send_data(packet: models.DataPacket, destination_identities: list[str])
    await room.remove_participant(identity)       # client sees PARTICIPANT_REMOVED
    await room.update_participant(identity, *, metadata=None, attributes=None,
                                  name=None, permission=None) -> Participant
    await room.mute_published_track(identity, track_sid, muted) -> TrackInfo

    participant.sid .identity .name .kind .metadata .attributes .permission
    participant.tracks (dict[track_sid, PublishedTrack]); participant.to_proto()

Errors: ``RoomError`` subclasses (``NotFoundError``, ``RoomFullError``, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from livekit.protocol import agent as proto_agent
from livekit.protocol import agent_dispatch as proto_dispatch
from livekit.protocol import models as proto_models
from livekit.protocol import rtc as proto_rtc

if TYPE_CHECKING:
    from .config import ServerConfig

logger = logging.getLogger("devstack.livekit.rooms")

ParticipantKind = proto_models.ParticipantInfo.Kind
DisconnectReason = proto_models.DisconnectReason

SERVER_VERSION = "1.9.0"  # what we report in ServerInfo; the SDKs only log it
PROTOCOL_VERSION = 16
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """LiveKit-style ids: RM_, PA_, TR_, AJ_, AD_, AW_ + 12 random chars."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def server_info(node_id: str = "local") -> proto_models.ServerInfo:
    return proto_models.ServerInfo(
        edition=proto_models.ServerInfo.Standard,
        version=SERVER_VERSION,
        protocol=PROTOCOL_VERSION,
        region="local",
        node_id=node_id,
        agent_protocol=1,
    )


class RoomError(Exception):
    """Base for errors a caller may map to a status (Twirp / HTTP)."""

    status = 500


class NotFoundError(RoomError):
    status = 404


class RoomFullError(RoomError):
    status = 503  # livekit-server answers "room is full" with 503 on join


class RoomClosedError(RoomError):
    status = 409


# --------------------------------------------------------------------------- #
# Interfaces other modules implement                                           #
# --------------------------------------------------------------------------- #


class ParticipantSession(Protocol):
    """What a Room needs from a connected client (implemented in signal.py)."""

    async def send_signal(self, msg: proto_rtc.SignalResponse) -> None: ...

    def send_data(self, payload: bytes, kind: int) -> None:
        """Best-effort: deliver an encoded DataPacket on the reliable/lossy channel."""

    async def subscribe(self, publisher: "Participant", track: "PublishedTrack") -> None:
        """Start forwarding `track` to this client (negotiates its subscriber PC)."""

    async def unsubscribe(self, track_sid: str) -> None: ...

    async def close(self, reason: int) -> None:
        """Send a LeaveRequest with `reason` and close the connection."""


class AgentDispatcher(Protocol):
    """Launches agent jobs (implemented by agent_workers.WorkerRegistry)."""

    def launch_room_job(self, room: "Room", dispatch: proto_dispatch.AgentDispatch) -> None: ...

    async def terminate_job(self, job_id: str) -> None: ...


# --------------------------------------------------------------------------- #
# State                                                                        #
# --------------------------------------------------------------------------- #


@dataclass
class PublishedTrack:
    """A published track. `source` is the media fan-out object (media.py), if any."""

    info: proto_models.TrackInfo
    publisher: "Participant"
    cid: str = ""
    source: Any = None  # media.TrackSource once the RTP stream arrived
    subscribers: set[str] = field(default_factory=set)  # identities

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def kind(self) -> str:
        return "audio" if self.info.type == proto_models.TrackType.AUDIO else "video"


class Participant:
    def __init__(
        self,
        *,
        identity: str,
        name: str = "",
        kind: int = ParticipantKind.STANDARD,
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        permission: proto_models.ParticipantPermission | None = None,
        session: ParticipantSession | None = None,
        auto_subscribe: bool = True,
        client_protocol: int = 0,
    ) -> None:
        self.sid = new_id("PA_")
        self.identity = identity
        self.name = name
        self.kind = kind
        self.metadata = metadata
        self.attributes: dict[str, str] = dict(attributes or {})
        self.permission = permission or proto_models.ParticipantPermission(
            can_subscribe=True, can_publish=True, can_publish_data=True
        )
        self.session = session
        self.auto_subscribe = auto_subscribe
        self.client_protocol = client_protocol
        self.tracks: dict[str, PublishedTrack] = {}
        self.state = proto_models.ParticipantInfo.JOINING
        self.joined_at = time.time()
        self.version = 1
        self.disconnect_reason = DisconnectReason.UNKNOWN_REASON
        self.job_id: str | None = None  # set when this participant is an agent job's
        self.room: Room | None = None

    @property
    def is_dependent(self) -> bool:
        """Agents (and recorders) do not keep a room alive, as in livekit-server."""
        return (
            self.kind in (ParticipantKind.AGENT, ParticipantKind.EGRESS)
            or self.permission.agent
            or self.permission.recorder
        )

    def bump(self) -> None:
        # Clients drop ParticipantInfo whose version is not newer than what they have.
        self.version += 1

    def to_proto(self) -> proto_models.ParticipantInfo:
        return proto_models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            tracks=[t.info for t in self.tracks.values()],
            metadata=self.metadata,
            joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000),
            version=self.version,
            permission=self.permission,
            region="local",
            is_publisher=bool(self.tracks),
            kind=self.kind,
            attributes=self.attributes,
            disconnect_reason=self.disconnect_reason,
            client_protocol=self.client_protocol,
        )

    def __repr__(self) -> str:
        return f"<Participant {self.identity} {self.sid} kind={self.kind}>"


Callback = Callable[..., Any]


class Room:
    def __init__(
        self,
        manager: "RoomManager",
        name: str,
        *,
        empty_timeout: int,
        departure_timeout: int,
        max_participants: int,
        metadata: str = "",
    ) -> None:
        self.manager = manager
        self.sid = new_id("RM_")
        self.name = name
        self.metadata = metadata
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self.max_participants = max_participants
        self.created_at = time.time()
        self.participants: dict[str, Participant] = {}
        self.dispatches: dict[str, proto_dispatch.AgentDispatch] = {}
        self.jobs: dict[str, proto_agent.Job] = {}  # job id -> Job (state kept current by the dispatcher)
        self.first_joined_at: float | None = None
        self.last_left_at: float | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- proto --
    def to_proto(self) -> proto_models.Room:
        return proto_models.Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=self.empty_timeout,
            departure_timeout=self.departure_timeout,
            max_participants=self.max_participants,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            metadata=self.metadata,
            num_participants=sum(
                1 for p in self.participants.values() if not p.permission.hidden
            ),
            num_publishers=sum(1 for p in self.participants.values() if p.tracks),
            enabled_codecs=[
                proto_models.Codec(mime="audio/opus"),
                proto_models.Codec(mime="video/VP8"),
                proto_models.Codec(mime="video/H264"),
            ],
        )

    def get_participant(self, identity: str) -> Participant | None:
        return self.participants.get(identity)

    def get_participant_by_sid(self, sid: str) -> Participant | None:
        return next((p for p in self.participants.values() if p.sid == sid), None)

    # ------------------------------------------------------------ broadcast --
    async def _broadcast(
        self, msg: proto_rtc.SignalResponse, *, exclude: Participant | None = None
    ) -> None:
        targets = [
            p
            for p in self.participants.values()
            if p is not exclude and p.session is not None and p.state != proto_models.ParticipantInfo.JOINING
        ]
        await asyncio.gather(
            *(self._safe_send(p, msg) for p in targets), return_exceptions=True
        )

    async def _safe_send(self, p: Participant, msg: proto_rtc.SignalResponse) -> None:
        try:
            await p.session.send_signal(msg)  # type: ignore[union-attr]
        except Exception:  # a dying connection must not break the room
            logger.debug("send to %s failed", p.identity, exc_info=True)

    async def broadcast_participant(self, p: Participant, *, include_self: bool = True) -> None:
        """Tell the room (and the participant itself) about p's new state.
        Hidden participants are only told about themselves."""
        msg = proto_rtc.SignalResponse(
            update=proto_rtc.ParticipantUpdate(participants=[p.to_proto()])
        )
        if p.permission.hidden:
            if include_self and p.session is not None:
                await self._safe_send(p, msg)
            return
        await self._broadcast(msg, exclude=None if include_self else p)

    # ---------------------------------------------------------- membership --
    def visible_others(self, p: Participant) -> list[Participant]:
        return [
            o
            for o in self.participants.values()
            if o is not p and not o.permission.hidden and o.state != proto_models.ParticipantInfo.JOINING
        ]

    async def add_participant(self, p: Participant) -> None:
        """Admit p (state JOINING). The caller sends the JoinResponse, then calls
        `activate_participant`. Raises RoomFullError / RoomClosedError."""
        if self.closed:
            raise RoomClosedError(f"room {self.name} is closed")
        old = self.participants.get(p.identity)
        if old is not None:
            # livekit-server replaces the older connection of the same identity
            await self._remove(old, DisconnectReason.DUPLICATE_IDENTITY)
        if self.max_participants > 0 and not p.is_dependent:
            n = sum(1 for o in self.participants.values() if not o.is_dependent)
            if n >= self.max_participants:
                raise RoomFullError("room is full")
        p.room = self
        self.participants[p.identity] = p
        if not p.is_dependent:  # agents alone do not keep a room open
            self._cancel_timer()
            if self.first_joined_at is None:
                self.first_joined_at = time.time()

    async def activate_participant(self, p: Participant) -> None:
        """After the JoinResponse went out: announce p, subscribe it to existing tracks."""
        p.state = proto_models.ParticipantInfo.JOINED
        if p.job_id is None:
            self.manager._link_agent_participant(self, p)
        if not p.permission.hidden:
            await self._broadcast(
                proto_rtc.SignalResponse(update=proto_rtc.ParticipantUpdate(participants=[p.to_proto()])),
                exclude=p,
            )
        await self.manager._emit("participant_joined", self, p)
        if p.auto_subscribe and p.permission.can_subscribe:
            for other in list(self.participants.values()):
                if other is p:
                    continue
                for t in list(other.tracks.values()):
                    await self.subscribe(p, t)

    async def mark_active(self, p: Participant) -> None:
        """Its media connection is up: announce ACTIVE, as livekit-server does. The
        agents framework's wait_for_participant() only returns ACTIVE participants."""
        if p.state != proto_models.ParticipantInfo.JOINED or self.participants.get(p.identity) is not p:
            return
        p.state = proto_models.ParticipantInfo.ACTIVE
        p.bump()
        if not p.permission.hidden:
            await self._broadcast(
                proto_rtc.SignalResponse(update=proto_rtc.ParticipantUpdate(participants=[p.to_proto()])),
                exclude=p,
            )

    async def participant_left(self, p: Participant, reason: int = DisconnectReason.CLIENT_INITIATED) -> None:
        """Called by the session when the client left or its connection dropped."""
        if self.participants.get(p.identity) is not p:
            return
        await self._remove(p, reason, notify_client=False)

    async def _remove(self, p: Participant, reason: int, *, notify_client: bool = True) -> None:
        if self.participants.get(p.identity) is not p:
            return
        del self.participants[p.identity]
        p.state = proto_models.ParticipantInfo.DISCONNECTED
        p.disconnect_reason = reason
        p.bump()
        for t in list(p.tracks.values()):
            await self._stop_track(t)
        # drop p's subscriptions to others' tracks
        for other in self.participants.values():
            for t in other.tracks.values():
                t.subscribers.discard(p.identity)
        if notify_client and p.session is not None:
            try:
                await p.session.close(reason)
            except Exception:
                logger.debug("close of %s failed", p.identity, exc_info=True)
        if not p.permission.hidden:
            await self._broadcast(
                proto_rtc.SignalResponse(update=proto_rtc.ParticipantUpdate(participants=[p.to_proto()]))
            )
        if not p.is_dependent:
            self.last_left_at = time.time()
        await self.manager._emit("participant_left", self, p)
        await self.manager._agent_participant_left(self, p)
        self._schedule_close_if_empty()

    async def remove_participant(self, identity: str) -> None:
        """Server-side removal (RoomService.RemoveParticipant): PARTICIPANT_REMOVED."""
        p = self.participants.get(identity)
        if p is None:
            raise NotFoundError(f"participant {identity} not found")
        await self._remove(p, DisconnectReason.PARTICIPANT_REMOVED)

    # ------------------------------------------------------------ updates ---
    async def update_participant(
        self,
        identity: str,
        *,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
        name: str | None = None,
        permission: proto_models.ParticipantPermission | None = None,
    ) -> Participant:
        """Change a participant; everyone (itself included) gets a ParticipantUpdate.
        Attributes merge; an empty value deletes the key (as in livekit-server)."""
        p = self.participants.get(identity)
        if p is None:
            raise NotFoundError(f"participant {identity} not found")
        if metadata is not None:
            p.metadata = metadata
        if name is not None:
            p.name = name
        if attributes:
            for k, v in attributes.items():
                if v == "":
                    p.attributes.pop(k, None)
                else:
                    p.attributes[k] = v
        if permission is not None:
            p.permission = permission
        p.bump()
        await self.broadcast_participant(p)
        await self.manager._emit("participant_updated", self, p)
        return p

    async def update_metadata(self, metadata: str) -> None:
        self.metadata = metadata
        await self._broadcast(proto_rtc.SignalResponse(room_update=proto_rtc.RoomUpdate(room=self.to_proto())))
        await self.manager._emit("room_updated", self)

    # ------------------------------------------------------------- tracks ---
    async def publish_track(self, p: Participant, track: PublishedTrack) -> None:
        """Register a track whose TrackPublishedResponse already went out."""
        p.tracks[track.sid] = track
        p.bump()
        await self.broadcast_participant(p, include_self=False)
        await self.manager._emit("track_published", self, p, track)

    async def track_media_ready(self, track: PublishedTrack) -> None:
        """The publisher's RTP stream arrived: auto-subscribe everyone who wants it."""
        for other in list(self.participants.values()):
            if other is track.publisher or other.state == proto_models.ParticipantInfo.JOINING:
                continue
            if other.auto_subscribe and other.permission.can_subscribe:
                await self.subscribe(other, track)

    async def subscribe(self, subscriber: Participant, track: PublishedTrack) -> None:
        if track.source is None or subscriber.identity in track.subscribers:
            return
        if subscriber.session is None:
            return
        track.subscribers.add(subscriber.identity)
        try:
            await subscriber.session.subscribe(track.publisher, track)
        except Exception:
            track.subscribers.discard(subscriber.identity)
            logger.exception("subscribing %s to %s failed", subscriber.identity, track.sid)
            return
        # livekit-agents' audio output waits for this before it plays anything
        pub = track.publisher
        if pub.session is not None and pub.identity in self.participants:
            await self._safe_send(
                pub, proto_rtc.SignalResponse(track_subscribed=proto_rtc.TrackSubscribed(track_sid=track.sid))
            )

    async def unsubscribe(self, subscriber: Participant, track: PublishedTrack) -> None:
        if subscriber.identity not in track.subscribers:
            return
        track.subscribers.discard(subscriber.identity)
        if subscriber.session is not None:
            await subscriber.session.unsubscribe(track.sid)

    async def _stop_track(self, track: PublishedTrack) -> None:
        pub = track.publisher
        pub.tracks.pop(track.sid, None)
        for ident in list(track.subscribers):
            sub = self.participants.get(ident)
            if sub is not None and sub.session is not None:
                try:
                    await sub.session.unsubscribe(track.sid)
                except Exception:
                    logger.debug("unsubscribe failed", exc_info=True)
        track.subscribers.clear()
        if track.source is not None and hasattr(track.source, "stop"):
            track.source.stop()
        await self.manager._emit("track_unpublished", self, pub, track)

    async def unpublish_track(self, p: Participant, track_sid: str) -> None:
        t = p.tracks.get(track_sid)
        if t is None:
            return
        await self._stop_track(t)
        p.bump()
        if p.session is not None:
            await self._safe_send(
                p, proto_rtc.SignalResponse(track_unpublished=proto_rtc.TrackUnpublishedResponse(track_sid=track_sid))
            )
        await self.broadcast_participant(p, include_self=False)

    async def set_track_muted(self, p: Participant, track_sid: str, muted: bool) -> proto_models.TrackInfo:
        """Client-initiated mute: record and tell the others."""
        t = p.tracks.get(track_sid)
        if t is None:
            raise NotFoundError(f"track {track_sid} not found")
        if t.info.muted != muted:
            t.info.muted = muted
            p.bump()
            await self.broadcast_participant(p, include_self=False)
        return t.info

    async def mute_published_track(self, identity: str, track_sid: str, muted: bool) -> proto_models.TrackInfo:
        """Server-initiated mute (RoomService.MutePublishedTrack): the publisher's
        SDK is told to mute, and everyone sees the new state."""
        p = self.participants.get(identity)
        if p is None:
            raise NotFoundError(f"participant {identity} not found")
        info = await self.set_track_muted(p, track_sid, muted)
        if p.session is not None:
            await self._safe_send(p, proto_rtc.SignalResponse(mute=proto_rtc.MuteTrackRequest(sid=track_sid, muted=muted)))
        return info

    # --------------------------------------------------------------- data ---
    async def send_data(
        self, packet: proto_models.DataPacket, destination_identities: list[str] | None = None
    ) -> None:
        """Server-originated data (RoomService.SendData): no sender stamp."""
        self.forward_data(None, packet, destination_identities=list(destination_identities or []))

    def forward_data(
        self,
        sender: Participant | None,
        packet: proto_models.DataPacket,
        *,
        destination_identities: list[str] | None = None,
    ) -> int:
        """Route a DataPacket to the room; returns how many receivers got it.
        The sender's sid/identity are stamped so clients cannot spoof them."""
        dests = list(destination_identities if destination_identities is not None else packet.destination_identities)
        if packet.HasField("user") and not dests:
            dests = list(packet.user.destination_identities)
            if not dests and packet.user.destination_sids:
                dests = [
                    o.identity for o in self.participants.values() if o.sid in packet.user.destination_sids
                ]
        if sender is not None:
            packet.participant_sid = sender.sid
            # Like livekit-server (pkg/rtc/participant.go), an agent's data-stream packets
            # keep the identity it streams on behalf of (a person's transcript).
            on_behalf = (
                sender.kind == ParticipantKind.AGENT
                and packet.WhichOneof("value") in ("stream_header", "stream_chunk", "stream_trailer")
                and packet.participant_identity
            )
            if not on_behalf:
                packet.participant_identity = sender.identity
            if packet.HasField("user"):
                packet.user.participant_sid = sender.sid
                packet.user.participant_identity = sender.identity
        payload = packet.SerializeToString()
        n = 0
        for p in list(self.participants.values()):
            if p is sender or p.session is None or p.state == proto_models.ParticipantInfo.JOINING:
                continue
            if dests and p.identity not in dests:
                continue
            try:
                p.session.send_data(payload, packet.kind)
                n += 1
            except Exception:
                logger.debug("data to %s failed", p.identity, exc_info=True)
        return n

    # ---------------------------------------------------------- lifecycle ---
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule_close_if_empty(self) -> None:
        """livekit-server's CloseIfEmpty: only non-dependent participants keep a
        room open; departure_timeout after the last one left, empty_timeout if
        nobody ever joined."""
        if self.closed or any(not p.is_dependent for p in self.participants.values()):
            return
        self._cancel_timer()
        if self.first_joined_at is not None and self.last_left_at is not None:
            delay = self.departure_timeout - (time.time() - self.last_left_at)
        else:
            delay = self.empty_timeout - (time.time() - self.created_at)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            max(delay, 0), lambda: loop.create_task(self._close_if_still_empty())
        )

    async def _close_if_still_empty(self) -> None:
        self._timer = None
        if self.closed or any(not p.is_dependent for p in self.participants.values()):
            return
        logger.info("closing idle room %s", self.name)
        await self.manager._close_room(self, DisconnectReason.ROOM_CLOSED)

    def __repr__(self) -> str:
        return f"<Room {self.name} {self.sid} participants={list(self.participants)}>"


class RoomManager:
    """All rooms of this server, plus agent dispatch bookkeeping."""

    EVENTS = (
        "room_started",        # (room)
        "room_finished",       # (room)
        "room_updated",        # (room)
        "participant_joined",  # (room, participant)
        "participant_left",    # (room, participant)
        "participant_updated", # (room, participant)
        "track_published",     # (room, participant, track)
        "track_unpublished",   # (room, participant, track)
    )

    def __init__(self, config: "ServerConfig") -> None:
        self.config = config
        self.rooms: dict[str, Room] = {}
        self.agent_dispatcher: AgentDispatcher | None = None  # set by agent_workers
        self._listeners: dict[str, list[Callback]] = {e: [] for e in self.EVENTS}

    # ------------------------------------------------------------- events ---
    def on(self, event: str, callback: Callback) -> Callback:
        """Register a sync or async callback for one of EVENTS."""
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; one of {self.EVENTS}")
        self._listeners[event].append(callback)
        return callback

    def off(self, event: str, callback: Callback) -> None:
        self._listeners.get(event, []).remove(callback)

    async def _emit(self, event: str, *args: Any) -> None:
        for cb in list(self._listeners.get(event, [])):
            try:
                res = cb(*args)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                logger.exception("%s listener failed", event)

    def _emit_soon(self, event: str, *args: Any) -> None:
        asyncio.get_running_loop().create_task(self._emit(event, *args))

    # -------------------------------------------------------------- rooms ---
    def get_room(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def create_room(
        self,
        name: str,
        *,
        empty_timeout: int | None = None,
        departure_timeout: int | None = None,
        max_participants: int | None = None,
        metadata: str = "",
        agents: list[proto_dispatch.RoomAgentDispatch] | None = None,
    ) -> Room:
        """Create `name`, or return the existing room unchanged (idempotent).

        Agent dispatches are created with the room, as livekit-server does:
        `agents` explicitly, or else one dispatch with an empty agent name, which
        every worker registered without an agent_name receives ("automatic").
        Must be called with a running event loop (timers)."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        d = self.config.room
        room = Room(
            self,
            name,
            empty_timeout=empty_timeout if empty_timeout else d.empty_timeout,
            departure_timeout=departure_timeout if departure_timeout else d.departure_timeout,
            max_participants=max_participants if max_participants else d.max_participants,
            metadata=metadata,
        )
        self.rooms[name] = room
        logger.info("room %s created (%s)", name, room.sid)
        room._schedule_close_if_empty()
        self._emit_soon("room_started", room)
        for rad in agents or [proto_dispatch.RoomAgentDispatch()]:
            self._add_dispatch(room, rad.agent_name, rad.metadata, dict(rad.attributes))
        return room

    async def delete_room(self, name: str) -> None:
        """RoomService.DeleteRoom: everyone is disconnected with ROOM_DELETED."""
        room = self.rooms.get(name)
        if room is None:
            raise NotFoundError(f"room {name} not found")
        await self._close_room(room, DisconnectReason.ROOM_DELETED)

    async def _close_room(self, room: Room, reason: int) -> None:
        if room.closed:
            return
        room.closed = True
        room._cancel_timer()
        # agent jobs end with the room: workers get JobTermination
        if self.agent_dispatcher is not None:
            for job_id, job in list(room.jobs.items()):
                if job.state.status not in (proto_agent.JS_PENDING, proto_agent.JS_RUNNING):
                    continue
                try:
                    await self.agent_dispatcher.terminate_job(job_id)
                except Exception:
                    logger.debug("terminate_job failed", exc_info=True)
        for p in list(room.participants.values()):
            await room._remove(p, reason)
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        logger.info("room %s closed", room.name)
        await self._emit("room_finished", room)

    async def close(self) -> None:
        """Server shutdown: close all rooms (SERVER_SHUTDOWN)."""
        for room in list(self.rooms.values()):
            await self._close_room(room, DisconnectReason.SERVER_SHUTDOWN)

    # ---------------------------------------------------------- dispatch ----
    def _add_dispatch(
        self, room: Room, agent_name: str, metadata: str, attributes: dict[str, str] | None
    ) -> proto_dispatch.AgentDispatch:
        dispatch = proto_dispatch.AgentDispatch(
            id=new_id("AD_"),
            agent_name=agent_name,
            room=room.name,
            metadata=metadata,
            attributes=attributes or {},
            state=proto_dispatch.AgentDispatchState(created_at=time.time_ns()),
        )
        room.dispatches[dispatch.id] = dispatch
        if self.agent_dispatcher is not None:
            self.agent_dispatcher.launch_room_job(room, dispatch)
        return dispatch

    async def dispatch_agent(
        self,
        room_name: str,
        agent_name: str,
        metadata: str = "",
        attributes: dict[str, str] | None = None,
    ) -> proto_dispatch.AgentDispatch:
        """AgentDispatchService.CreateDispatch: dispatch `agent_name` to the room
        (created if missing and auto_create is on). Returns the AgentDispatch;
        its state.jobs fills in as workers accept (see list_dispatches)."""
        room = self.rooms.get(room_name)
        if room is None:
            if not self.config.room.auto_create:
                raise NotFoundError(f"room {room_name} not found")
            room = self.create_room(room_name)
        d = self._add_dispatch(room, agent_name, metadata, attributes)
        return self.list_dispatches(room.name, d.id)[0]

    def list_dispatches(self, room_name: str, dispatch_id: str = "") -> list[proto_dispatch.AgentDispatch]:
        """Copies of the room's dispatches, each with its jobs' current state."""
        room = self.rooms.get(room_name)
        if room is None:
            return []
        out = []
        for d in room.dispatches.values():
            if dispatch_id and d.id != dispatch_id:
                continue
            c = proto_dispatch.AgentDispatch()
            c.CopyFrom(d)
            c.state.jobs.extend(j for j in room.jobs.values() if j.dispatch_id == d.id)
            out.append(c)
        return out

    async def delete_dispatch(self, room_name: str, dispatch_id: str) -> proto_dispatch.AgentDispatch:
        """Removes the dispatch and terminates its jobs (workers get JobTermination)."""
        room = self.rooms.get(room_name)
        if room is None or dispatch_id not in room.dispatches:
            raise NotFoundError("dispatch ID not found")
        dispatch = self.list_dispatches(room_name, dispatch_id)[0]
        del room.dispatches[dispatch_id]
        dispatch.state.deleted_at = time.time_ns()
        if self.agent_dispatcher is not None:
            for job in list(room.jobs.values()):
                if job.dispatch_id == dispatch_id:
                    await self.agent_dispatcher.terminate_job(job.id)
        return dispatch

    def record_job(self, room: Room, job: proto_agent.Job) -> None:
        """Called by the dispatcher once a worker accepted a job. The Job object is
        shared with the dispatcher, which keeps its state current."""
        room.jobs[job.id] = job

    def find_job(self, job_id: str) -> tuple[Room, proto_agent.Job] | None:
        for room in self.rooms.values():
            job = room.jobs.get(job_id)
            if job is not None:
                return room, job
        return None

    def _link_agent_participant(self, room: Room, p: Participant) -> None:
        for job in room.jobs.values():
            if job.state.participant_identity == p.identity and p.kind == ParticipantKind.AGENT:
                p.job_id = job.id

    async def _agent_participant_left(self, room: Room, p: Participant) -> None:
        # The agent's connection is gone: its job is over (worker may still report).
        if p.job_id and p.job_id in room.jobs:
            job = room.jobs[p.job_id]
            if job.state.status in (proto_agent.JS_PENDING, proto_agent.JS_RUNNING):
                job.state.status = proto_agent.JS_SUCCESS
                job.state.ended_at = time.time_ns()
        # a human left: jobs of type JT_PARTICIPANT about them would end here; we
        # only run JT_ROOM jobs, which end with the room.
