"""aiortc peer connections and RTP forwarding for the local LiveKit server.

Forwarding is encoded pass-through: the publisher's RTP is depacketised into
encoded frames (opus packets, VP8/H264 frames) and re-packetised for every
subscriber without decoding or encoding, so a forwarded stream costs a few
percent of a core instead of a codec round trip, and adds no codec delay.

How, given aiortc has no SFU mode:
  * publisher side: the RTCRtpReceiver's decoder queue is replaced by a tap that
    hands encoded frames to a ``TrackSource`` (the decoder thread then idles);
    for audio the jitter buffer is replaced by a zero-delay one (every opus RTP
    packet is a whole frame; loopback does not reorder).
  * subscriber side: ``ForwardTrack.recv()`` returns ``av.Packet``s, which
    aiortc's RTCRtpSender packetises as-is (its "pre-encoded" path).
  * keyframes: a new video subscriber, or a PLI/FIR from one, becomes a PLI to
    the publisher; subscribers get video only from a keyframe on.

ICE: candidates are gathered only on the node IP (rtc.node_ip or the detected
non-loopback address): libwebrtc gathers none on loopback, aioice drops
127.0.0.1, and nothing may be addressed to another host (no STUN servers).
"""

from __future__ import annotations

import asyncio
import contextvars
import fractions
import json
import logging
import queue
import re
from typing import Any, Callable

import av
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

logger = logging.getLogger("devstack.livekit.media")

# --------------------------------------------------------------------------- #
# ICE: only the node address, only for our own connections                     #
# --------------------------------------------------------------------------- #

_node_ip: contextvars.ContextVar[str | None] = contextvars.ContextVar("lk_node_ip", default=None)
_patched = False


def install_ice_address_filter() -> None:
    """Make aioice gather host candidates on the node IP only, for peer
    connections created in a context where `_node_ip` is set (our server's
    tasks). Other aiortc users in the same process are unaffected."""
    global _patched
    if _patched:
        return
    import aioice.ice

    original = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        ip = _node_ip.get()
        return [ip] if ip else original(use_ipv4, use_ipv6)

    aioice.ice.get_host_addresses = get_host_addresses
    _accept_rid_header_extensions()
    _patched = True


def _accept_rid_header_extensions() -> None:
    """Let aiortc's answers accept the RID header extensions. Without them in the
    first answer, libwebrtc refuses its own later simulcast offer ("negotiates
    simulcast but does not negotiate the RID RTP header extension") and a
    default (simulcast) video publish fails. aiortc ignores a=simulcast, so the
    publisher then sends a single encoding. (Answers use the offer's ids; the
    ids here only matter in our own offers and are unused by aiortc.)"""
    from aiortc.codecs import HEADER_EXTENSIONS
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

    video = HEADER_EXTENSIONS["video"]
    have = {e.uri for e in video}
    for ext_id, uri in ((10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
                        (11, "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id")):
        if uri not in have:
            video.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))


def use_node_ip(node_ip: str) -> None:
    """Gather on node_ip only in the current task (call before setLocalDescription)."""
    _node_ip.set(node_ip)


def new_peer_connection(node_ip: str, *, max_bundle: bool = False) -> RTCPeerConnection:
    use_node_ip(node_ip)
    # iceServers=[]: aiortc would otherwise add a public STUN server.
    # max_bundle (the subscriber side, which offers): every transceiver on the first one's
    # transport from the start. Under aiortc's default (balanced) a second video transceiver
    # added while the first still waits for the answer that bundles it takes the first's
    # provisional transport, is marked bundled, and stays on that never-connected transport:
    # its track is never forwarded (seen with several video tracks subscribed at once).
    policy = RTCBundlePolicy.MAX_BUNDLE if max_bundle else RTCBundlePolicy.BALANCED
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=policy))


_MDNS_LINE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local .*$\r?\n?", re.M)


def strip_mdns_candidates(sdp: str) -> str:
    """Drop `.local` candidates: aioice would stall ~1 s resolving each one."""
    return _MDNS_LINE.sub("", sdp)


def parse_trickle(candidate_init: str):
    """TrickleRequest.candidateInit (JSON RTCIceCandidateInit) -> aiortc candidate,
    or None for end-of-candidates / mDNS candidates we ignore."""
    init = json.loads(candidate_init)
    cand = init.get("candidate") or ""
    if not cand:
        return None
    if cand.startswith("candidate:"):
        cand = cand[len("candidate:"):]
    c = candidate_from_sdp(cand)
    if c.ip.endswith(".local"):
        return None
    c.sdpMid = init.get("sdpMid")
    c.sdpMLineIndex = init.get("sdpMLineIndex")
    return c


def sdp_media_sections(sdp: str) -> list[dict[str, Any]]:
    """Minimal SDP walk: per m-section its kind, mid, direction, msid track id, codecs."""
    sections: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            cur = {"kind": kind, "port": int(port), "mid": None, "direction": "sendrecv",
                   "track_id": None, "codecs": []}
            sections.append(cur)
        elif cur is None:
            continue
        elif line.startswith("a=mid:"):
            cur["mid"] = line[6:].strip()
        elif line.strip() in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            cur["direction"] = line.strip()[2:]
        elif line.startswith("a=msid:"):
            parts = line[7:].split()
            if len(parts) >= 2:
                cur["track_id"] = parts[1]
        elif line.startswith("a=rtpmap:"):
            cur["codecs"].append(line.split()[1].split("/")[0].lower())
    return sections


# --------------------------------------------------------------------------- #
# Encoded-frame fan-out                                                         #
# --------------------------------------------------------------------------- #


class _PassThroughAudioJitterBuffer:
    """Every opus RTP packet is one frame: hand it on at once (no prefetch)."""

    capacity = 16

    def add(self, packet):  # -> (pli_flag, frame)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


class _Tap(queue.Queue):
    """Stands in for RTCRtpReceiver's decoder queue: encoded frames go to the
    TrackSource instead of the decoder thread (which then only waits for None)."""

    def __init__(self, on_frame: Callable[[Any, JitterFrame], None]) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, item, block=True, timeout=None):  # noqa: D401
        if item is None:
            return super().put(item, block, timeout)
        codec, frame = item
        self._on_frame(codec, frame)


def _is_keyframe(codec_name: str, data: bytes) -> bool:
    if not data:
        return False
    if codec_name == "VP8":
        return (data[0] & 0x01) == 0  # VP8 frame tag: P bit clear = key frame
    if codec_name == "H264":
        # Annex-B stream from aiortc's depayloader: look for an IDR (5) or SPS (7)
        i = 0
        n = len(data)
        while i + 3 < n:
            if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
                if data[i + 3] & 0x1F in (5, 7):
                    return True
                i += 3
            else:
                i += 1
        return False
    return True


class TrackSource:
    """One published track's encoded frames, fanned out to ForwardTracks."""

    def __init__(self, kind: str, receiver, track_sid: str = "") -> None:
        # Must run synchronously in the PC's "track" event, i.e. before aiortc
        # starts the receiver (and its decoder thread) on the original queue.
        if getattr(receiver, "_RTCRtpReceiver__decoder_thread", None) is not None:
            raise RuntimeError("receiver already started; cannot tap its frames")
        self.kind = kind
        self.track_sid = track_sid
        self.receiver = receiver
        self.codec = None  # aiortc RTCRtpCodecParameters once known
        self.consumers: set[ForwardTrack] = set()
        self.stopped = False
        self.frames = 0
        self._loop = asyncio.get_running_loop()
        self._codec_known = asyncio.Event()
        # pass-through hooks (private aiortc attributes; pinned aiortc==1.16.0)
        receiver._RTCRtpReceiver__decoder_queue = _Tap(self._on_frame)
        if kind == "audio":
            receiver._RTCRtpReceiver__jitter_buffer = _PassThroughAudioJitterBuffer()

    @property
    def mime_type(self) -> str:
        return self.codec.mimeType if self.codec is not None else ""

    async def wait_codec(self, timeout: float = 10.0) -> bool:
        try:
            await asyncio.wait_for(self._codec_known.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def _on_frame(self, codec, frame: JitterFrame) -> None:
        if self.codec is None or self.codec.name != codec.name:
            self.codec = codec
            self._codec_known.set()
        self.frames += 1
        key = self.kind == "video" and _is_keyframe(codec.name, frame.data)
        pkt = av.Packet(frame.data)
        pkt.pts = frame.timestamp
        pkt.time_base = fractions.Fraction(1, codec.clockRate)
        for c in tuple(self.consumers):
            c.push(pkt, key)

    def request_keyframe(self) -> None:
        if self.kind != "video" or self.stopped:
            return
        ssrcs = list(getattr(self.receiver, "_RTCRtpReceiver__active_ssrc", {}).keys())
        for ssrc in ssrcs[-1:]:
            self._loop.create_task(self._pli(ssrc))

    async def _pli(self, ssrc: int) -> None:
        try:
            await self.receiver._send_rtcp_pli(ssrc)
        except Exception:
            logger.debug("PLI failed", exc_info=True)

    def new_consumer(self, track_sid: str) -> "ForwardTrack":
        t = ForwardTrack(self, track_sid)
        self.consumers.add(t)
        self.request_keyframe()
        return t

    def stop(self) -> None:
        self.stopped = True
        for c in tuple(self.consumers):
            c.detach()
        self.consumers.clear()


class ForwardTrack(MediaStreamTrack):
    """A subscriber's view of a TrackSource; yields av.Packet (pre-encoded)."""

    def __init__(self, source: TrackSource, track_sid: str) -> None:
        super().__init__()
        self.kind = source.kind
        self._id = track_sid  # the SDK maps msid "<PA_sid>|<TR_sid> <TR_sid>"
        self.source: TrackSource | None = source
        # small queue: on overload drop the oldest rather than add latency
        self._queue: asyncio.Queue[av.Packet] = asyncio.Queue(maxsize=8 if source.kind == "audio" else 30)
        self._need_key = source.kind == "video"

    def push(self, pkt: av.Packet, keyframe: bool) -> None:
        if self._need_key:
            if not keyframe:
                return
            self._need_key = False
        if self._queue.full():
            try:
                self._queue.get_nowait()
            except asyncio.QueueEmpty:
                pass
            if self.kind == "video":  # a dropped video frame breaks decoding
                self._need_key = True
                if self.source is not None:
                    self.source.request_keyframe()
                return
        self._queue.put_nowait(pkt)

    def request_keyframe(self) -> None:
        if self.source is not None:
            self.source.request_keyframe()

    def detach(self) -> None:
        """Stop feeding this subscriber; recv() then waits forever (the sender
        must not crash on a None track, so we never end it abruptly)."""
        if self.source is not None:
            self.source.consumers.discard(self)
        self.source = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        return await self._queue.get()


def attach_forward_track(pc: RTCPeerConnection, track: ForwardTrack, stream_id: str):
    """Add `track` as a sendonly transceiver on a subscriber PC, restricted to
    the publisher's codec (pass-through cannot transcode), with PLI/FIR from the
    subscriber routed to the publisher."""
    transceiver = pc.addTransceiver(track, direction="sendonly")
    sender = transceiver.sender
    sender._stream_id = stream_id
    src = track.source
    if src is not None and src.codec is not None:
        caps = RTCRtpSender.getCapabilities(track.kind)
        want = src.codec.mimeType.lower()
        prefs = [c for c in caps.codecs if c.mimeType.lower() == want]
        if src.codec.name == "H264":
            plid = src.codec.parameters.get("profile-level-id")
            same = [c for c in prefs if c.parameters.get("profile-level-id") == plid]
            prefs = same or prefs
        if track.kind == "video":
            prefs += [c for c in caps.codecs if c.mimeType.lower() == "video/rtx"]
        if prefs:
            transceiver.setCodecPreferences(prefs)
    sender._send_keyframe = track.request_keyframe  # PLI/FIR from subscriber
    return transceiver


__all__ = [
    "TrackSource",
    "ForwardTrack",
    "attach_forward_track",
    "install_ice_address_filter",
    "new_peer_connection",
    "parse_trickle",
    "sdp_media_sections",
    "strip_mdns_candidates",
    "RTCSessionDescription",
]
