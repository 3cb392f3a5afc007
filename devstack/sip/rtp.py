"""RTP for one call: G.711 in and out, paced at 20 ms against a deadline, and RFC 4733
telephone-events both ways."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import time
from collections import deque
from typing import Callable

import numpy as np

from . import g711

logger = logging.getLogger("devstack.sip.rtp")

RATE = 8000
SAMPLES = 160  # 20 ms
DIGITS = "0123456789*#ABCD"  # RFC 4733 event codes 0-15, the same as SipDTMF.code


def digit_code(digit: str) -> int:
    code = DIGITS.find(digit.upper())
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def parse_rtp(data: bytes) -> tuple[int, int, int, bytes] | None:
    """-> (payload type, sequence number, timestamp, payload), or None if not RTP v2."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    cc = data[0] & 0x0F
    pt = data[1] & 0x7F
    seq, ts = struct.unpack("!HI", data[2:8])
    off = 12 + 4 * cc
    if data[0] & 0x10:  # header extension
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2: off + 4])[0]
    end = len(data)
    if data[0] & 0x20 and end > off:  # padding
        end -= data[-1]
    return (pt, seq, ts, data[off:end]) if end >= off else None


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[bytes, tuple], None]) -> None:
        self.on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.on_packet(data, addr)


class RtpSession:
    def __init__(self, host: str, *, on_audio: Callable[[np.ndarray], None],
                 on_dtmf: Callable[[str], None]) -> None:
        self.host = host
        self.port = 0
        self.on_audio = on_audio
        self.on_dtmf = on_dtmf
        self.remote: tuple[str, int] | None = None
        self.pt = g711.PCMU
        self.te_pt: int | None = None
        self.pull: Callable[[], np.ndarray] = lambda: np.zeros(SAMPLES, np.int16)
        self.packets_in = self.packets_out = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task | None = None
        self._dtmf_out: deque[str] = deque()
        self._last_event_ts: int | None = None
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)

    async def open(self) -> int:
        """Bind an even port for RTP (RTCP on port+1 bound and discarded)."""
        loop = asyncio.get_running_loop()
        for _ in range(50):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind((self.host, 0))
            port = rtp.getsockname()[1]
            if port % 2:
                rtp.close()
                continue
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((self.host, port + 1))
            except OSError:
                rtp.close()
                rtcp.close()
                continue
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self._received), sock=rtp)
            self._rtcp, _ = await loop.create_datagram_endpoint(lambda: _Proto(lambda d, a: None), sock=rtcp)
            self.port = port
            return port
        raise OSError("no even RTP port pair free")

    def start(self, remote: tuple[str, int], pt: int, te_pt: int | None) -> None:
        self.remote, self.pt, self.te_pt = remote, pt, te_pt
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_loop(), name="rtp-send")

    def send_dtmf(self, digits: str) -> None:
        self._dtmf_out.extend(digits)

    async def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except (asyncio.CancelledError, Exception):
                pass
        for t in (self._transport, self._rtcp):
            if t is not None:
                t.close()

    # --------------------------------------------------------------- receive --
    def _received(self, data: bytes, addr: tuple) -> None:
        pkt = parse_rtp(data)
        if pkt is None:
            return
        pt, _seq, ts, payload = pkt
        self.packets_in += 1
        if pt in (g711.PCMU, g711.PCMA):
            self.on_audio(g711.decode(payload, pt))
        elif pt == self.te_pt and len(payload) >= 4:
            # the end packet is repeated: one digit per event timestamp
            if payload[1] & 0x80 and ts != self._last_event_ts and payload[0] < len(DIGITS):
                self._last_event_ts = ts
                self.on_dtmf(DIGITS[payload[0]])

    # ------------------------------------------------------------------ send --
    def _packet(self, pt: int, payload: bytes, *, ts: int, marker: bool = False) -> bytes:
        self._seq = (self._seq + 1) & 0xFFFF
        return struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), self._seq, ts & 0xFFFFFFFF,
                           self._ssrc) + payload

    def _send(self, data: bytes) -> None:
        if self._transport is not None and self.remote is not None:
            self._transport.sendto(data, self.remote)
            self.packets_out += 1

    async def _send_loop(self) -> None:
        t0 = time.perf_counter()
        n = 0
        event: list[bytes] = []  # telephone-event packets still to send, one per tick
        gap = 0
        while True:
            n += 1
            if not event and gap == 0 and self._dtmf_out and self.te_pt is not None:
                event = self._event_packets(digit_code(self._dtmf_out.popleft()))
            if event:
                self._send(event.pop(0))
                if not event:
                    gap = 3  # 60 ms between digits
                self.pull()  # keep the room audio in step
            else:
                gap = max(0, gap - 1)
                self._send(self._packet(self.pt, g711.encode(self.pull(), self.pt), ts=self._ts))
            self._ts += SAMPLES
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.perf_counter()))

    def _event_packets(self, code: int) -> list[bytes]:
        """5 packets of growing duration on one timestamp, then 3 end packets (E bit)."""
        ts = self._ts
        out = [self._packet(self.te_pt, struct.pack("!BBH", code, 10, SAMPLES * (i + 1)), ts=ts, marker=i == 0)
               for i in range(5)]
        out += [self._packet(self.te_pt, struct.pack("!BBH", code, 0x80 | 10, SAMPLES * 6), ts=ts)
                for _ in range(3)]
        return out
