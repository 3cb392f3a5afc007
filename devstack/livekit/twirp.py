"""RoomService and AgentDispatchService (Twirp) of the local LiveKit server.

``setup(app, manager, config)`` registers ``POST /twirp/livekit.<Service>/<Method>``
on the server's aiohttp app. Requests come as protobuf (what ``livekit-api`` sends)
or JSON; callers authenticate with an access token signed by one of the server's
API keys and need the grant livekit-server asks for:

=====================================  ==========================================
CreateRoom, DeleteRoom                 roomCreate
ListRooms                              roomList
every other RoomService method         roomAdmin for the request's room
AgentDispatchService (all)             roomAdmin for the request's room
=====================================  ==========================================

Errors are Twirp JSON errors: ``unauthenticated`` (401) for a missing or bad token,
``permission_denied`` (403) for a missing grant, ``not_found`` (404) for an unknown
room/participant/track/dispatch, ``invalid_argument`` (400) for a bad field,
``malformed`` (400) for an undecodable body, ``bad_route`` (404) for an unknown
method, ``unimplemented`` (501) for RoomService methods this server does not offer.

Note: livekit-server itself answers a missing grant with ``unauthenticated``
("permissions denied"); this server uses the more precise ``permission_denied``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from aiohttp import web
from google.protobuf.message import Message
from livekit.protocol import agent_dispatch as proto_dispatch
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room

from .rooms import NotFoundError, RoomClosedError, RoomError, RoomFullError
from .twirp_wire import (
    Authenticator,
    Caller,
    TwirpError,
    decode,
    encode,
    invalid_argument,
    not_found,
    request_encoding,
    require_room_admin,
    require_room_create,
    require_room_list,
)

if TYPE_CHECKING:
    from .config import ServerConfig
    from .rooms import Participant, Room, RoomManager

logger = logging.getLogger("devstack.livekit.twirp")

# livekit-server's defaults (config `limit:` / `room:` sections)
MAX_ROOM_NAME_LENGTH = 256
MAX_IDENTITY_LENGTH = 256
MAX_NAME_LENGTH = 256
MAX_METADATA_SIZE = 64000
MAX_ATTRIBUTES_SIZE = 64000

Handler = Callable[[Caller, Message], Awaitable[Message]]


@dataclass
class _Method:
    request: type[Message]
    handler: Handler | None  # None: known to the protocol, not offered here


def setup(app: web.Application, manager: "RoomManager", config: "ServerConfig") -> None:
    """Register the Twirp routes on `app`."""
    services = TwirpServices(manager, config)
    app.router.add_route("*", "/twirp/{service}/{method}", services.handle)


class TwirpServices:
    def __init__(self, manager: "RoomManager", config: "ServerConfig") -> None:
        self.manager = manager
        self.config = config
        self.auth = Authenticator(config.keys)
        room_handlers = {
            "CreateRoom": self.create_room,
            "ListRooms": self.list_rooms,
            "DeleteRoom": self.delete_room,
            "ListParticipants": self.list_participants,
            "GetParticipant": self.get_participant,
            "UpdateParticipant": self.update_participant,
            "RemoveParticipant": self.remove_participant,
            "MutePublishedTrack": self.mute_published_track,
            "SendData": self.send_data,
            "UpdateRoomMetadata": self.update_room_metadata,
        }
        dispatch_handlers = {
            "CreateDispatch": self.create_dispatch,
            "DeleteDispatch": self.delete_dispatch,
            "ListDispatch": self.list_dispatch,
        }
        self.routes: dict[str, dict[str, _Method]] = {
            "livekit.RoomService": _methods(proto_room, "RoomService", room_handlers),
            "livekit.AgentDispatchService": _methods(
                proto_dispatch, "AgentDispatchService", dispatch_handlers
            ),
        }

    # ------------------------------------------------------------ routing --
    async def handle(self, request: web.Request) -> web.StreamResponse:
        service = request.match_info["service"]
        name = request.match_info["method"]
        try:
            if request.method != "POST":
                raise TwirpError(
                    "bad_route",
                    f"unsupported method {request.method} (only POST is allowed): {request.path}",
                )
            method = self.routes.get(service, {}).get(name)
            if method is None:
                raise TwirpError("bad_route", f"no handler for path {request.path!r}")
            encoding = request_encoding(request)
            caller = self.auth.authenticate(request)
            if method.handler is None:
                raise TwirpError(
                    "unimplemented",
                    f"{service}.{name} is not supported by the local LiveKit server",
                )
            req = decode(await request.read(), encoding, method.request)
            try:
                resp = await method.handler(caller, req)
            except RoomError as e:
                raise _from_room_error(e) from None
            return encode(resp, encoding)
        except TwirpError as e:
            if e.status >= 500:
                logger.warning("twirp %s/%s: %s", service, name, e)
            else:
                logger.debug("twirp %s/%s: %s", service, name, e)
            return e.response()
        except Exception as e:  # a bug here must still produce a Twirp error
            logger.exception("twirp %s/%s failed", service, name)
            return TwirpError("internal", f"{type(e).__name__}: {e}").response()

    # ------------------------------------------------------------ lookups --
    def _room(self, name: str) -> "Room":
        if not name:
            raise invalid_argument("room name is required", "room")
        room = self.manager.get_room(name)
        if room is None or room.closed:
            raise not_found(f"room {name!r} not found")
        return room

    def _participant(self, room: "Room", identity: str) -> "Participant":
        if not identity:
            raise invalid_argument("participant identity is required", "identity")
        p = room.get_participant(identity)
        if p is None:
            raise not_found(f"participant {identity!r} not found in room {room.name!r}")
        return p

    # --------------------------------------------------------- RoomService --
    async def create_room(self, caller: Caller, req: proto_room.CreateRoomRequest) -> Message:
        require_room_create(caller, "CreateRoom")
        _check_room_name(req.name)
        _check_metadata(req.metadata)
        if req.HasField("egress") and req.egress.ByteSize():
            raise TwirpError("unimplemented", "egress is not supported by the local LiveKit server")
        for i, rad in enumerate(req.agents):
            _check_metadata(rad.metadata, f"agents[{i}].metadata")
        # idempotent, as livekit-server: an existing room is returned unchanged
        room = self.manager.create_room(
            req.name,
            empty_timeout=req.empty_timeout or None,
            departure_timeout=req.departure_timeout or None,
            max_participants=req.max_participants or None,
            metadata=req.metadata,
            agents=list(req.agents) or None,
        )
        return room.to_proto()

    async def list_rooms(self, caller: Caller, req: proto_room.ListRoomsRequest) -> Message:
        require_room_list(caller, "ListRooms")
        rooms = [r for r in self.manager.rooms.values() if not r.closed]
        if req.names:
            wanted = set(req.names)
            rooms = [r for r in rooms if r.name in wanted]
        return proto_room.ListRoomsResponse(rooms=[r.to_proto() for r in rooms])

    async def delete_room(self, caller: Caller, req: proto_room.DeleteRoomRequest) -> Message:
        require_room_create(caller, "DeleteRoom")
        self._room(req.room)
        await self.manager.delete_room(req.room)
        return proto_room.DeleteRoomResponse()

    async def list_participants(
        self, caller: Caller, req: proto_room.ListParticipantsRequest
    ) -> Message:
        require_room_admin(caller, "ListParticipants", req.room)
        room = self._room(req.room)
        return proto_room.ListParticipantsResponse(
            participants=[p.to_proto() for p in room.participants.values()]
        )

    async def get_participant(
        self, caller: Caller, req: proto_room.RoomParticipantIdentity
    ) -> Message:
        require_room_admin(caller, "GetParticipant", req.room)
        return self._participant(self._room(req.room), req.identity).to_proto()

    async def update_participant(
        self, caller: Caller, req: proto_room.UpdateParticipantRequest
    ) -> Message:
        require_room_admin(caller, "UpdateParticipant", req.room)
        room = self._room(req.room)
        self._participant(room, req.identity)
        _check_metadata(req.metadata)
        if len(req.name) > MAX_NAME_LENGTH:
            raise invalid_argument(
                f"name is {len(req.name)} characters; the limit is {MAX_NAME_LENGTH}", "name"
            )
        attributes = dict(req.attributes)
        size = sum(len(k.encode()) + len(v.encode()) for k, v in attributes.items())
        if size > MAX_ATTRIBUTES_SIZE:
            raise invalid_argument(
                f"attributes are {size} bytes; the limit is {MAX_ATTRIBUTES_SIZE}", "attributes"
            )
        if any(not k for k in attributes):
            raise invalid_argument("attribute keys must not be empty", "attributes")
        p = await room.update_participant(
            req.identity,
            metadata=req.metadata or None,  # empty means "leave unchanged", as livekit-server
            attributes=attributes or None,
            name=req.name or None,
            permission=req.permission if req.HasField("permission") else None,
        )
        return p.to_proto()

    async def remove_participant(
        self, caller: Caller, req: proto_room.RoomParticipantIdentity
    ) -> Message:
        require_room_admin(caller, "RemoveParticipant", req.room)
        room = self._room(req.room)
        self._participant(room, req.identity)
        await room.remove_participant(req.identity)
        return proto_room.RemoveParticipantResponse()

    async def mute_published_track(
        self, caller: Caller, req: proto_room.MuteRoomTrackRequest
    ) -> Message:
        require_room_admin(caller, "MutePublishedTrack", req.room)
        room = self._room(req.room)
        p = self._participant(room, req.identity)
        if not req.track_sid:
            raise invalid_argument("track_sid is required", "track_sid")
        track = p.tracks.get(req.track_sid)
        if track is None:
            raise not_found(
                f"track {req.track_sid!r} not found: participant {req.identity!r} has not "
                "published it"
            )
        if not req.muted and track.info.muted:
            # livekit-server's default (room.enable_remote_unmute: false)
            raise TwirpError(
                "failed_precondition",
                "remote unmute is not enabled: only the publisher can unmute its track",
            )
        info = await room.mute_published_track(req.identity, req.track_sid, req.muted)
        return proto_room.MuteRoomTrackResponse(track=info)

    async def send_data(self, caller: Caller, req: proto_room.SendDataRequest) -> Message:
        require_room_admin(caller, "SendData", req.room)
        room = self._room(req.room)
        if req.kind not in (proto_models.DataPacket.RELIABLE, proto_models.DataPacket.LOSSY):
            raise invalid_argument(f"unknown data packet kind {req.kind}", "kind")
        destinations = list(dict.fromkeys(req.destination_identities))
        for sid in req.destination_sids:
            p = room.get_participant_by_sid(sid)
            if p is not None and p.identity not in destinations:
                destinations.append(p.identity)
        if (req.destination_identities or req.destination_sids) and not destinations:
            return proto_room.SendDataResponse()  # addressed to nobody present
        user = proto_models.UserPacket(
            payload=req.data, destination_identities=destinations, nonce=req.nonce
        )
        if req.HasField("topic"):
            user.topic = req.topic
        packet = proto_models.DataPacket(
            kind=req.kind, destination_identities=destinations, user=user
        )
        await room.send_data(packet, destinations)
        return proto_room.SendDataResponse()

    async def update_room_metadata(
        self, caller: Caller, req: proto_room.UpdateRoomMetadataRequest
    ) -> Message:
        require_room_admin(caller, "UpdateRoomMetadata", req.room)
        room = self._room(req.room)
        _check_metadata(req.metadata)
        await room.update_metadata(req.metadata)
        return room.to_proto()

    # ------------------------------------------------ AgentDispatchService --
    async def create_dispatch(
        self, caller: Caller, req: proto_dispatch.CreateAgentDispatchRequest
    ) -> Message:
        require_room_admin(caller, "CreateDispatch", req.room)
        if not req.room:
            raise invalid_argument("room name is required", "room")
        _check_room_name(req.room)
        _check_metadata(req.metadata)
        return await self.manager.dispatch_agent(
            req.room, req.agent_name, req.metadata, dict(req.attributes) or None
        )

    async def delete_dispatch(
        self, caller: Caller, req: proto_dispatch.DeleteAgentDispatchRequest
    ) -> Message:
        require_room_admin(caller, "DeleteDispatch", req.room)
        if not req.dispatch_id:
            raise invalid_argument("dispatch_id is required", "dispatch_id")
        self._room(req.room)
        try:
            deleted = await self.manager.delete_dispatch(req.room, req.dispatch_id)
        except NotFoundError:
            raise not_found(
                f"dispatch {req.dispatch_id!r} not found in room {req.room!r}"
            ) from None
        return deleted or proto_dispatch.AgentDispatch(id=req.dispatch_id, room=req.room)

    async def list_dispatch(
        self, caller: Caller, req: proto_dispatch.ListAgentDispatchRequest
    ) -> Message:
        require_room_admin(caller, "ListDispatch", req.room)
        self._room(req.room)
        return proto_dispatch.ListAgentDispatchResponse(
            agent_dispatches=self.manager.list_dispatches(req.room, req.dispatch_id)
        )


# ---------------------------------------------------------------- helpers


def _methods(module, service: str, handlers: dict[str, Handler]) -> dict[str, _Method]:
    """Every method the protocol defines for `service`, with our handler or None."""
    from google.protobuf import message_factory

    desc = module.DESCRIPTOR.services_by_name[service]
    out: dict[str, _Method] = {}
    for m in desc.methods:
        cls = message_factory.GetMessageClass(m.input_type)
        out[m.name] = _Method(cls, handlers.get(m.name))
    missing = set(handlers) - set(out)
    assert not missing, f"handlers for unknown methods: {missing}"
    return out


def _check_room_name(name: str) -> None:
    if not name:
        raise invalid_argument("room name is required", "name")
    if len(name) > MAX_ROOM_NAME_LENGTH:
        raise invalid_argument(
            f"room name is {len(name)} characters; the limit is {MAX_ROOM_NAME_LENGTH}", "name"
        )


def _check_metadata(metadata: str, field: str = "metadata") -> None:
    size = len(metadata.encode())
    if size > MAX_METADATA_SIZE:
        raise invalid_argument(
            f"{field} is {size} bytes; the limit is {MAX_METADATA_SIZE}", field
        )


def _from_room_error(e: RoomError) -> TwirpError:
    msg = str(e) or type(e).__name__
    if isinstance(e, NotFoundError):
        return TwirpError("not_found", msg)
    if isinstance(e, RoomFullError):
        return TwirpError("resource_exhausted", msg)
    if isinstance(e, RoomClosedError):
        return TwirpError("failed_precondition", msg)
    return TwirpError("internal", msg)
