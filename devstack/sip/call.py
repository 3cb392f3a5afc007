"""One phone call: its SIP dialog, its RTP and its LiveKit participant."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .message import SipMessage, hostport_of, new_branch, uri_of
from .room_leg import RoomLeg
from .rtp import RtpSession

if TYPE_CHECKING:
    from .gateway import SipGateway

logger = logging.getLogger("devstack.sip.call")


class SipFailure(Exception):
    """A call ended with a SIP status (busy, no answer, refused...)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


@dataclass
class Dialog:
    call_id: str
    local: str           # our From (outbound) / To (inbound) header value, with our tag
    remote: str          # theirs, with their tag
    remote_target: str   # their Contact URI: where in-dialog requests go
    remote_addr: tuple[str, int]
    cseq: int = 1
    transfer_notify: asyncio.Queue = field(default_factory=asyncio.Queue)


class Call:
    def __init__(self, gateway: "SipGateway", dialog: Dialog, *, direction: str,
                 room_name: str, identity: str) -> None:
        self.gw = gateway
        self.dialog = dialog
        self.direction = direction
        self.room_name = room_name
        self.identity = identity
        self.sip_call_id = dialog.call_id
        self.lk_call_id = ""
        self.status = "ringing"
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.rtp = RtpSession(gateway.host, on_audio=self._phone_audio, on_dtmf=self._phone_dtmf)
        self.leg = RoomLeg(on_dtmf=self.rtp.send_dtmf, on_gone=self._room_gone)
        self.rtp.pull = self.leg.pull
        self.local_sdp = b""
        self.invite: SipMessage | None = None  # inbound: the INVITE being answered
        self.last_response: SipMessage | None = None
        self.acked = asyncio.Event()
        self.cancelled = False
        # while the gateway asks for a PIN: the keypad's digits (None: the call hung up), and
        # the phone's audio goes nowhere; None once the caller is in a room
        self.keypad: asyncio.Queue[str | None] | None = None

    # ------------------------------------------------------------------ media --
    def _phone_audio(self, pcm) -> None:
        if self.keypad is None:
            self.leg.phone_audio(pcm)

    def _phone_dtmf(self, digit: str) -> None:
        logger.info("call %s: phone pressed %s", self.sip_call_id, digit)
        if self.keypad is not None:
            self.keypad.put_nowait(digit)
        else:
            asyncio.get_running_loop().create_task(self.leg.phone_dtmf(digit))

    async def set_status(self, status: str) -> None:
        self.status = status
        await self.leg.set_status(status)

    # ---------------------------------------------------------- in-dialog out --
    def in_dialog_request(self, method: str, extra: list[tuple[str, str]] = (), body: bytes = b"",
                          content_type: str = "") -> SipMessage:
        d = self.dialog
        d.cseq += 1
        req = SipMessage(method=method, uri=d.remote_target)
        req.add("Via", f"SIP/2.0/UDP {self.gw.address};branch={new_branch()};rport")
        req.add("Max-Forwards", "70")
        req.add("From", d.local)
        req.add("To", d.remote)
        req.add("Call-ID", d.call_id)
        req.add("CSeq", f"{d.cseq} {method}")
        req.add("Contact", f"<{self.gw.contact_uri}>")
        for k, v in extra:
            req.add(k, v)
        if body:
            req.add("Content-Type", content_type)
            req.body = body
        return req

    def target_addr(self) -> tuple[str, int]:
        try:
            return hostport_of(self.dialog.remote_target)
        except ValueError:
            return self.dialog.remote_addr

    async def hangup(self, reason: str, *, send_bye: bool = True) -> None:
        """End the call on both sides: BYE to the phone (unless it hung up), leave the room."""
        if self.ended.is_set():
            return
        self.ended.set()
        self.end_reason = reason
        if self.keypad is not None:
            self.keypad.put_nowait(None)
        logger.info("call %s ends: %s", self.sip_call_id, reason)
        self.gw.forget(self)
        await self.set_status("hangup")
        if send_bye and self.status_answered:
            with contextlib.suppress(Exception):
                await self.gw.request(self.in_dialog_request("BYE"), self.target_addr(), timeout=4)
        await self.rtp.close()
        await self.leg.leave()

    @property
    def status_answered(self) -> bool:
        return self.acked.is_set() or self.direction == "outbound" and self.rtp.remote is not None

    def _room_gone(self, reason: str) -> None:
        # the room was deleted, or this participant removed: the phone hears BYE
        asyncio.get_running_loop().create_task(self.hangup(f"room: {reason}"))

    # ---------------------------------------------------------------- transfer --
    async def transfer(self, transfer_to: str, timeout: float) -> None:
        """livekit-sip's cold transfer: REFER, wait for the final NOTIFY, then BYE."""
        refer = self.in_dialog_request("REFER", [("Refer-To", f"<{transfer_to}>"),
                                                 ("Referred-By", self.dialog.local.split(";")[0])])
        resp = await self.gw.request(refer, self.target_addr(), timeout=timeout)
        if resp.status >= 300:
            raise SipFailure(resp.status, resp.reason)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            try:
                status, reason = await asyncio.wait_for(self.dialog.transfer_notify.get(), max(remaining, 0.01))
            except asyncio.TimeoutError:
                raise SipFailure(408, "Request Timeout") from None
            if status >= 200:
                break
        if status >= 300:
            raise SipFailure(status, reason)
        await asyncio.sleep(0.2)  # the phone usually hangs up itself after a successful transfer
        await self.hangup("transferred")


def sipfrag_status(body: bytes) -> tuple[int, str] | None:
    line = body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else ""
    parts = line.split(" ", 2)
    if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1]), parts[2] if len(parts) > 2 else ""
    return None


def contact_target(msg: SipMessage, fallback: str) -> str:
    c = msg.get("Contact")
    return uri_of(c) if c else fallback
