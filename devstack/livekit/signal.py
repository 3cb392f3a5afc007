"""The `/rtc` signal connection: SignalRequest in, SignalResponse out.

One ``SignalSession`` per connected client. It owns the client's two aiortc
peer connections (publisher: the client offers; subscriber: we offer) and
implements rooms.ParticipantSession. The v1 single-PC protocol is not served:
`/rtc/v1` answers 404 so SDKs fall back to `/rtc` (two peer connections).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from livekit.protocol import models as proto_models
from livekit.protocol import rtc as proto_rtc

from . import auth, media
from .rooms import (
    DisconnectReason,
    NotFoundError,
    Participant,
    PublishedTrack,
    Room,
    RoomError,
    new_id,
    server_info,
)

if TYPE_CHECKING:
    from .server import LocalLiveKitServer

logger = logging.getLogger("devstack.livekit.signal")

PING_INTERVAL = 5  # seconds; livekit-server defaults. 0 makes the Rust SDK panic.
PING_TIMEOUT = 15
SUB_ANSWER_TIMEOUT = 15.0
_OK = proto_rtc.RequestResponse.OK
_NOT_ALLOWED = proto_rtc.RequestResponse.NOT_ALLOWED
_NOT_FOUND = proto_rtc.RequestResponse.NOT_FOUND


def _bool(v: str | None, default: bool) -> bool:
    if v is None or v == "":
        return default
    return v in ("1", "true")


def _now_ms() -> int:
    return int(time.time() * 1000)


class SignalSession:
    def __init__(self, server: "LocalLiveKitServer", ws: web.WebSocketResponse, room: Room, participant: Participant) -> None:
        self.server = server
        self.ws = ws
        self.room = room
        self.p = participant
        self.node_ip = server.node_ip
        self._send_lock = asyncio.Lock()
        self.closed = False
        # publisher side
        self.pub_pc = None
        self._pending_tracks: dict[str, PublishedTrack] = {}  # cid -> track awaiting media
        self._mid_to_cid: dict[str, str] = {}
        self._mid_to_track: dict[str, PublishedTrack] = {}
        self._new_remote: list = []  # (transceiver) collected during setRemoteDescription
        self._channels: dict[int, object] = {}  # DataPacket.Kind -> RTCDataChannel
        self._data_backlog: list[tuple[bytes, int]] = []
        # subscriber side
        self.sub_pc = None
        self._sub_tracks: dict[str, tuple[object, media.ForwardTrack]] = {}  # track sid -> (transceiver, fwd)
        self._sub_dirty = asyncio.Event()
        self._sub_answer: asyncio.Future | None = None
        self._sub_task: asyncio.Task | None = None
        self._sub_remote_set = False
        self._sub_candidates: list = []
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------ sending ---
    async def send_signal(self, msg: proto_rtc.SignalResponse) -> None:
        if self.closed or self.ws.closed:
            return
        data = msg.SerializeToString()
        async with self._send_lock:
            await self.ws.send_bytes(data)

    def send_data(self, payload: bytes, kind: int) -> None:
        ch = self._channels.get(kind) or self._channels.get(proto_models.DataPacket.RELIABLE)
        if ch is None or getattr(ch, "readyState", "") != "open":
            # channels open right after the publisher PC connects; keep order
            if len(self._data_backlog) < 1000:
                self._data_backlog.append((payload, kind))
            return
        ch.send(payload)

    def _flush_data_backlog(self) -> None:
        backlog, self._data_backlog = self._data_backlog, []
        for payload, kind in backlog:
            self.send_data(payload, kind)

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    # --------------------------------------------------------------- join ---
    async def send_join(self) -> None:
        others = [o.to_proto() for o in self.room.visible_others(self.p)]
        join = proto_rtc.JoinResponse(
            room=self.room.to_proto(),
            participant=self.p.to_proto(),
            other_participants=others,
            server_version=server_info().version,
            server_info=server_info(self.server.node_id),
            subscriber_primary=False,  # client negotiates its publisher PC at once
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            server_region="local",
            # as livekit-server: a participant that may publish need not wait (the SDK
            # otherwise holds every first publish back by 150 ms)
            fast_publish=self.p.permission.can_publish,
            # only what aiortc can forward: steers SDKs away from VP9/AV1
            enabled_publish_codecs=[
                proto_models.Codec(mime="audio/opus"),
                proto_models.Codec(mime="video/VP8"),
                proto_models.Codec(mime="video/H264"),
            ],
        )
        await self.send_signal(proto_rtc.SignalResponse(join=join))

    # ----------------------------------------------------------- main loop --
    async def run(self) -> None:
        reason = DisconnectReason.CLIENT_INITIATED
        try:
            while not self.closed:
                try:
                    msg = await self.ws.receive(timeout=PING_TIMEOUT)
                except asyncio.TimeoutError:
                    logger.info("%s: ping timeout", self.p.identity)
                    reason = DisconnectReason.SIGNAL_CLOSE
                    break
                if msg.type == WSMsgType.BINARY:
                    req = proto_rtc.SignalRequest()
                    try:
                        req.ParseFromString(msg.data)
                    except Exception:
                        logger.warning("%s: undecodable signal message", self.p.identity)
                        continue
                    if await self.handle(req) is False:
                        break
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    reason = DisconnectReason.SIGNAL_CLOSE if not self.closed else reason
                    break
        finally:
            await self.room.participant_left(self.p, reason)
            await self.shutdown()

    async def handle(self, req: proto_rtc.SignalRequest) -> bool | None:
        which = req.WhichOneof("message")
        try:
            if which == "ping":
                await self.send_signal(proto_rtc.SignalResponse(pong=_now_ms()))
            elif which == "ping_req":
                await self.send_signal(proto_rtc.SignalResponse(
                    pong_resp=proto_rtc.Pong(last_ping_timestamp=req.ping_req.timestamp, timestamp=_now_ms())))
            elif which == "add_track":
                await self._on_add_track(req.add_track)
            elif which == "offer":
                await self._on_publisher_offer(req.offer)
            elif which == "answer":
                if self._sub_answer is not None and not self._sub_answer.done():
                    self._sub_answer.set_result(req.answer)
            elif which == "trickle":
                await self._on_trickle(req.trickle)
            elif which == "mute":
                await self._on_mute(req.mute)
            elif which == "update_metadata":
                await self._on_update_metadata(req.update_metadata)
            elif which == "subscription":
                await self._on_subscription(req.subscription)
            elif which == "leave":
                await self.room.participant_left(self.p, DisconnectReason.CLIENT_INITIATED)
                return False
            else:
                # track_setting, update_layers, subscription_permission, sync_state,
                # simulate, update_*_track, data tracks: accepted, not acted on
                logger.debug("%s: ignoring %s", self.p.identity, which)
        except Exception:
            logger.exception("%s: handling %s failed", self.p.identity, which)
        return None

    # ---------------------------------------------------------- publishing --
    def _source_allowed(self, source: int) -> bool:
        perm = self.p.permission
        if not perm.can_publish:
            return False
        return not perm.can_publish_sources or source in perm.can_publish_sources

    async def _on_add_track(self, req: proto_rtc.AddTrackRequest) -> None:
        if not self._source_allowed(req.source):
            await self.send_signal(proto_rtc.SignalResponse(request_response=proto_rtc.RequestResponse(
                reason=_NOT_ALLOWED, message="does not have permission to publish", add_track=req)))
            return
        info = proto_models.TrackInfo(
            sid=req.sid or new_id("TR_"),
            type=req.type,
            name=req.name,
            muted=req.muted,
            width=req.width,
            height=req.height,
            source=req.source,
            disable_dtx=req.disable_dtx,
            stereo=req.stereo,
            disable_red=True,  # aiortc has no RED; the publisher sends plain opus
            encryption=req.encryption,
            stream=req.stream,
            audio_features=list(req.audio_features),
            layers=list(req.layers),
            backup_codec_policy=req.backup_codec_policy,
        )
        track = PublishedTrack(info=info, publisher=self.p, cid=req.cid)
        self._pending_tracks[req.cid] = track
        await self.send_signal(proto_rtc.SignalResponse(
            track_published=proto_rtc.TrackPublishedResponse(cid=req.cid, track=info)))

    def _watch_active(self, pc) -> None:
        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState == "connected" and self.p.room is not None:
                await self.p.room.mark_active(self.p)

    def _ensure_pub_pc(self):
        if self.pub_pc is not None:
            return self.pub_pc
        pc = media.new_peer_connection(self.node_ip)
        self._watch_active(pc)

        @pc.on("track")
        def _on_track(track) -> None:
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    # tap now: aiortc starts the receiver right after the answer
                    self._new_remote.append((t, media.TrackSource(t.kind, t.receiver)))

        @pc.on("datachannel")
        def _on_dc(ch) -> None:
            kind = proto_models.DataPacket.LOSSY if ch.label == "_lossy" else proto_models.DataPacket.RELIABLE
            if ch.label not in ("_reliable", "_lossy"):
                return  # _data_track: data tracks are not supported
            self._channels[kind] = ch

            @ch.on("message")
            def _on_message(data) -> None:
                if isinstance(data, (bytes, bytearray)):
                    self._on_data(bytes(data), kind)

            @ch.on("open")
            def _on_open() -> None:
                self._flush_data_backlog()

            if ch.readyState == "open":
                self._flush_data_backlog()

        self.pub_pc = pc
        return pc

    async def _on_publisher_offer(self, offer: proto_rtc.SessionDescription) -> None:
        media.use_node_ip(self.node_ip)
        pc = self._ensure_pub_pc()
        sdp = media.strip_mdns_candidates(offer.sdp)
        sections = media.sdp_media_sections(sdp)
        for s in sections:
            if s["mid"] is not None and s["track_id"]:
                self._mid_to_cid[s["mid"]] = s["track_id"]
        for mid, tid in offer.mid_to_track_id.items():
            self._mid_to_cid[mid] = tid
        self._new_remote = []
        await pc.setRemoteDescription(media.RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await self.send_signal(proto_rtc.SignalResponse(answer=proto_rtc.SessionDescription(
            type="answer", sdp=pc.localDescription.sdp, id=offer.id)))
        # tracks the client stopped sending (unpublish = removeTrack + renegotiate)
        for s in sections:
            t = self._mid_to_track.get(s["mid"])
            if t is not None and (s["port"] == 0 or s["direction"] in ("recvonly", "inactive")):
                self._mid_to_track.pop(s["mid"], None)
                if t.sid in self.p.tracks:
                    await self.room.unpublish_track(self.p, t.sid)
        new, self._new_remote = self._new_remote, []
        for transceiver, src in new:
            await self._start_published_track(transceiver, src)

    async def _start_published_track(self, transceiver, src: media.TrackSource) -> None:
        mid = transceiver.mid
        cid = self._mid_to_cid.get(mid)
        track = self._pending_tracks.pop(cid, None) if cid else None
        if track is None:
            # media without add_track: match by kind as a fallback (older clients)
            kind = transceiver.kind
            cand = [t for t in self._pending_tracks.values() if t.kind == kind]
            if not cand:
                logger.warning("%s: media section %s has no published track", self.p.identity, mid)
                return
            track = cand[0]
            self._pending_tracks.pop(track.cid, None)
        src.track_sid = track.sid
        codecs = getattr(transceiver, "_codecs", None) or []
        if codecs:
            src.codec = codecs[0]  # the first codec of our answer is what the client sends
            track.info.mime_type = codecs[0].mimeType
        track.info.mid = mid or ""
        track.source = src
        self._mid_to_track[mid] = track
        await self.room.publish_track(self.p, track)
        await self.room.track_media_ready(track)

    async def _on_trickle(self, req: proto_rtc.TrickleRequest) -> None:
        try:
            cand = media.parse_trickle(req.candidateInit)
        except Exception:
            logger.debug("bad candidate %r", req.candidateInit)
            return
        if cand is None:
            return
        if req.target == proto_rtc.SUBSCRIBER:
            if self.sub_pc is None or not self._sub_remote_set:
                self._sub_candidates.append(cand)
                return
            await self.sub_pc.addIceCandidate(cand)
        else:
            if self.pub_pc is None:
                return
            await self.pub_pc.addIceCandidate(cand)

    async def _on_mute(self, req: proto_rtc.MuteTrackRequest) -> None:
        pending = next((t for t in self._pending_tracks.values() if t.sid == req.sid), None)
        if pending is not None:
            pending.info.muted = req.muted
            return
        try:
            await self.room.set_track_muted(self.p, req.sid, req.muted)
        except NotFoundError:
            pass

    async def _on_update_metadata(self, req: proto_rtc.UpdateParticipantMetadata) -> None:
        if not self.p.permission.can_update_metadata:
            await self.send_signal(proto_rtc.SignalResponse(request_response=proto_rtc.RequestResponse(
                request_id=req.request_id, reason=_NOT_ALLOWED,
                message="does not have permission to update own metadata", update_metadata=req)))
            return
        # as livekit-server: empty name/metadata mean "unchanged"
        await self.room.update_participant(
            self.p.identity,
            metadata=req.metadata or None,
            name=req.name or None,
            attributes=dict(req.attributes) if req.attributes else None,
        )
        await self.send_signal(proto_rtc.SignalResponse(request_response=proto_rtc.RequestResponse(
            request_id=req.request_id, reason=_OK, update_metadata=req)))

    async def _on_subscription(self, req: proto_rtc.UpdateSubscription) -> None:
        sids = set(req.track_sids)
        for pt in req.participant_tracks:
            sids.update(pt.track_sids)
        for other in list(self.room.participants.values()):
            for t in list(other.tracks.values()):
                if t.sid in sids:
                    if req.subscribe:
                        await self.room.subscribe(self.p, t)
                    else:
                        await self.room.unsubscribe(self.p, t)

    # --------------------------------------------------------------- data ---
    def _on_data(self, payload: bytes, kind: int) -> None:
        if not self.p.permission.can_publish_data:
            return
        pkt = proto_models.DataPacket()
        try:
            pkt.ParseFromString(payload)
        except Exception:
            return
        pkt.kind = kind
        self.room.forward_data(self.p, pkt)

    # --------------------------------------------------------- subscribing --
    async def subscribe(self, publisher: Participant, track: PublishedTrack) -> None:
        src = track.source
        if src is None or track.sid in self._sub_tracks:
            return
        if self.sub_pc is None:
            self.sub_pc = media.new_peer_connection(self.node_ip, max_bundle=True)
            self._watch_active(self.sub_pc)
        fwd = src.new_consumer(track.sid)
        transceiver = media.attach_forward_track(self.sub_pc, fwd, f"{publisher.sid}|{track.sid}")
        self._sub_tracks[track.sid] = (transceiver, fwd)
        self._negotiate_subscriber()

    async def unsubscribe(self, track_sid: str) -> None:
        entry = self._sub_tracks.pop(track_sid, None)
        if entry is None:
            return
        transceiver, fwd = entry
        fwd.detach()
        transceiver.direction = "inactive"
        self._negotiate_subscriber()

    def _negotiate_subscriber(self) -> None:
        self._sub_dirty.set()
        if self._sub_task is None or self._sub_task.done():
            self._sub_task = self._spawn(self._subscriber_negotiation_loop())

    async def _subscriber_negotiation_loop(self) -> None:
        """One offer at a time; changes made meanwhile are batched into the next."""
        media.use_node_ip(self.node_ip)
        while self._sub_dirty.is_set() and not self.closed:
            self._sub_dirty.clear()
            pc = self.sub_pc
            offer = await pc.createOffer()
            await pc.setLocalDescription(offer)
            self._sub_answer = asyncio.get_running_loop().create_future()
            await self.send_signal(proto_rtc.SignalResponse(offer=proto_rtc.SessionDescription(
                type="offer", sdp=pc.localDescription.sdp)))
            try:
                answer = await asyncio.wait_for(self._sub_answer, SUB_ANSWER_TIMEOUT)
            except asyncio.TimeoutError:
                logger.warning("%s: no subscriber answer", self.p.identity)
                return
            sdp = media.strip_mdns_candidates(answer.sdp)
            await pc.setRemoteDescription(media.RTCSessionDescription(sdp=sdp, type="answer"))
            if not self._sub_remote_set:
                self._sub_remote_set = True
                cands, self._sub_candidates = self._sub_candidates, []
                for c in cands:
                    await pc.addIceCandidate(c)

    # -------------------------------------------------------------- close ---
    async def close(self, reason: int) -> None:
        """Server-initiated disconnect: LeaveRequest with the reason, then close."""
        if self.closed:
            return
        try:
            await self.send_signal(proto_rtc.SignalResponse(leave=proto_rtc.LeaveRequest(
                can_reconnect=False, reason=reason, action=proto_rtc.LeaveRequest.DISCONNECT)))
        except Exception:
            pass
        self.closed = True
        try:
            await self.ws.close()
        except Exception:
            pass

    async def shutdown(self) -> None:
        self.closed = True
        for _, fwd in self._sub_tracks.values():
            fwd.detach()
        self._sub_tracks.clear()
        for t in list(self._tasks):
            t.cancel()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                try:
                    await pc.close()
                except Exception:
                    logger.debug("pc close failed", exc_info=True)
        if not self.ws.closed:
            await self.ws.close()


# ------------------------------------------------------------------ HTTP ---


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message)


async def _validate(server: "LocalLiveKitServer", request: web.Request):
    """Shared by /rtc and /rtc/validate: -> (claims, room name, identity)."""
    token = auth.token_from_request(request.headers, request.query)
    if not token:
        raise auth.AuthError(401, auth.PERMISSION_DENIED)
    claims = auth.verify_token(token, server.config.keys)
    room_name, identity = auth.check_join(claims)
    if server.manager.get_room(room_name) is None and not server.config.room.auto_create:
        raise auth.AuthError(404, "requested room does not exist")
    return claims, room_name, identity


async def _refuse_resume(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    leave = proto_rtc.LeaveRequest(
        can_reconnect=True, reason=DisconnectReason.STATE_MISMATCH, action=proto_rtc.LeaveRequest.RECONNECT
    )
    await ws.send_bytes(proto_rtc.SignalResponse(leave=leave).SerializeToString())
    await ws.close()
    return ws


def setup(app: web.Application, server: "LocalLiveKitServer") -> None:
    async def rtc_validate(request: web.Request) -> web.Response:
        try:
            await _validate(server, request)
        except auth.AuthError as e:
            return _error(e.status, e.message)
        return web.Response(text="success")

    async def rtc_v1(request: web.Request) -> web.Response:
        # not served: a 404 makes SDKs fall back to /rtc (dual peer connection)
        return _error(404, "404 page not found")

    async def rtc(request: web.Request) -> web.StreamResponse:
        try:
            claims, room_name, identity = await _validate(server, request)
        except auth.AuthError as e:
            return _error(e.status, e.message)
        manager = server.manager
        room = manager.get_room(room_name)
        if request.query.get("reconnect") == "1":
            # A resume: this server keeps no session state across a dropped signal
            # connection, so, as livekit-server does for a session it no longer knows, it
            # asks for a full reconnect (the SDK then joins afresh and republishes).
            return await _refuse_resume(request)
        if room is None:
            rc = claims.room_config
            room = manager.create_room(
                room_name,
                empty_timeout=rc.empty_timeout if rc else None,
                departure_timeout=rc.departure_timeout if rc else None,
                max_participants=rc.max_participants if rc else None,
                metadata=rc.metadata if rc else "",
                agents=list(rc.agents) if rc and rc.agents else None,
            )
        q = request.query
        p = Participant(
            identity=identity,
            name=claims.name or "",
            kind=auth.participant_kind(claims),
            metadata=claims.metadata or "",
            attributes=claims.attributes or {},
            permission=auth.participant_permission(claims),
            auto_subscribe=_bool(q.get("auto_subscribe"), True),
            client_protocol=int(q.get("client_protocol") or 0),
        )
        try:
            await room.add_participant(p)
        except RoomError as e:
            msg = "room has exceeded its max participants" if e.status == 503 else str(e)
            return _error(e.status, msg)

        ws = web.WebSocketResponse(max_msg_size=0)
        try:
            await ws.prepare(request)
        except Exception:
            await room.participant_left(p, DisconnectReason.JOIN_FAILURE)
            raise
        session = SignalSession(server, ws, room, p)
        p.session = session
        server.sessions.add(session)
        try:
            await session.send_join()
            await room.activate_participant(p)
            await session.run()
        finally:
            server.sessions.discard(session)
        return ws

    app.router.add_get("/rtc", rtc)
    app.router.add_get("/rtc/validate", rtc_validate)
    app.router.add_get("/rtc/v1", rtc_v1)
    app.router.add_get("/rtc/v1/validate", rtc_v1)
