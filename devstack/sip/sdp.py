"""SDP offer/answer for one audio stream: G.711 (PCMU/PCMA) and RFC 4733 telephone-event."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from .g711 import PCMA, PCMU


class NoCommonCodec(ValueError):
    pass


@dataclass
class AudioOffer:
    host: str
    port: int
    payload_types: list[int]
    telephone_event: int | None  # the offer's PT for telephone-event/8000


def parse_offer(body: bytes) -> AudioOffer:
    text = body.decode("utf-8", "replace")
    host, port, pts, te = "", 0, [], None
    session_host = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("c=IN IP4 "):
            if port:
                host = line.split()[2]
            else:
                session_host = line.split()[2]
        elif line.startswith("m=audio "):
            parts = line.split()
            port = int(parts[1])
            pts = [int(p) for p in parts[3:] if p.isdigit()]
        elif m := re.match(r"a=rtpmap:(\d+) telephone-event/8000", line, re.I):
            te = int(m.group(1))
    if not port:
        raise NoCommonCodec("no audio stream in the offer")
    return AudioOffer(host or session_host, port, pts, te)


def choose_codec(offer: AudioOffer) -> int:
    for pt in offer.payload_types:
        if pt in (PCMU, PCMA):
            return pt
    raise NoCommonCodec(f"no common codec: offered payload types {offer.payload_types}, we take PCMU (0) or PCMA (8)")


def build(host: str, port: int, codecs: list[int], telephone_event: int | None) -> bytes:
    """Our SDP (answer: the one chosen codec; offer: both) with telephone-event."""
    sess = int(time.time())
    pts = [*codecs] + ([telephone_event] if telephone_event is not None else [])
    lines = [
        "v=0", f"o=- {sess} {sess} IN IP4 {host}", "s=LiveKit", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}",
    ]
    names = {PCMU: "PCMU/8000", PCMA: "PCMA/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in codecs]
    if telephone_event is not None:
        lines += [f"a=rtpmap:{telephone_event} telephone-event/8000", f"a=fmtp:{telephone_event} 0-16"]
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()
