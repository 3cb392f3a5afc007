"""A local stand-in for LiveKit's SIP service (livekit-sip): SIP over UDP, G.711 RTP, and
each call's caller in a LiveKit room as a participant of kind SIP (through the rtc SDK).

    gw = SipGateway(store, livekit_url=..., api_key=..., api_secret=..., port=5060)
    await gw.start()   # gw.address: "127.0.0.1:5060"

Inbound: INVITE -> trunk and dispatch rule (routing.py) -> 100, 180, the caller joins the
rule's room (sip.callStatus ringing) -> 200 with SDP -> ACK (active). Outbound
(`dial`, for CreateSIPParticipant): the participant joins (dialing), INVITE to the outbound
trunk's address, 180 (ringing), 200 (active), or the SIP failure. Also: re-INVITE (same
SDP), CANCEL (487), BYE, OPTIONS, REFER out with NOTIFY in (transfers), 481 for unknown
dialogs, 400 for malformed requests, 404 / 488 as livekit-sip answers unmatched calls and
calls with no common codec; 407 / 401 for a trunk with credentials (digest.py); a rule
with a PIN answers first and asks for it (tones, prompts.py), as livekit-sip does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livekit.protocol import sip as proto_sip

from . import sdp
from .call import Call, Dialog, SipFailure, contact_target, sipfrag_status
from .digest import InviteAuth
from .message import (ALLOW, SipMessage, SipParseError, missing_mandatory, new_branch, new_tag,
                      parse, response, tag_of, uri_of, user_of)
from .prompts import ENTER_PIN, ROOM_JOIN, WRONG_PIN, PromptPlayer
from .room_leg import sip_token
from .routing import NeedPin, NoMatch, SipStore, new_id

logger = logging.getLogger("devstack.sip")

T1 = 0.5
PIN_TIMEOUT_S = 30.0  # between keypad digits while the gateway asks for a PIN


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, gw: "SipGateway") -> None:
        self.gw = gw

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.gw.received(data, addr)


class _ClientTx:
    def __init__(self, on_provisional) -> None:
        self.final: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self.provisional = asyncio.Event()
        self.on_provisional = on_provisional


class SipGateway:
    def __init__(self, store: SipStore, *, livekit_url: str, api_key: str, api_secret: str,
                 host: str = "127.0.0.1", port: int = 5060, ringing_s: float = 0.0) -> None:
        self.store = store
        self.livekit_url, self.api_key, self.api_secret = livekit_url, api_key, api_secret
        self.host, self.port = host, port
        self.ringing_s = ringing_s
        self.calls: dict[str, Call] = {}
        self.rejected: list[tuple[int, str]] = []  # (status, reason) of refused INVITEs, newest last
        self.auth = InviteAuth()
        # awaited before a new call is routed: a store in another process refreshes itself
        self.before_invite = None
        self._refreshing: set[str] = set()  # Call-IDs of INVITEs waiting for it
        self._transport: asyncio.DatagramTransport | None = None
        self._tx: dict[tuple[str, int, str], _ClientTx] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def contact_uri(self) -> str:
        return f"sip:livekit@{self.address}"

    async def start(self) -> "SipGateway":
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(self), local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]
        logger.info("SIP gateway on udp:%s", self.address)
        return self

    async def stop(self) -> None:
        for call in list(self.calls.values()):
            await call.hangup("gateway stopping")
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    def forget(self, call: Call) -> None:
        if self.calls.get(call.sip_call_id) is call:
            del self.calls[call.sip_call_id]

    def find_call(self, room: str, identity: str) -> Call | None:
        return next((c for c in self.calls.values() if c.room_name == room and c.identity == identity), None)

    # -------------------------------------------------------------- transport --
    def send(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(msg.encode(), addr)

    def received(self, data: bytes, addr: tuple) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse(data)
        except SipParseError as e:
            logger.info("dropping malformed SIP from %s: %s", addr, e)
            return
        if msg.is_request:
            self._spawn(self._on_request(msg, addr))
        else:
            self._on_response(msg)

    def _spawn(self, coro) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            logger.error("SIP handler failed", exc_info=t.exception())

    # ---------------------------------------------------- client transactions --
    async def request(self, req: SipMessage, addr: tuple[str, int], *, timeout: float = 32 * T1,
                      on_provisional=None) -> SipMessage:
        """Send a request (retransmitted as RFC 3261 Timer A/E) and return its final response."""
        num, method = req.cseq
        key = (req.call_id, num, method)
        tx = self._tx[key] = _ClientTx(on_provisional)
        try:
            interval = T1
            deadline = time.monotonic() + timeout
            while not tx.final.done():
                self.send(req, addr)
                wait = min(interval, deadline - time.monotonic())
                if wait <= 0:
                    raise SipFailure(408, "Request Timeout")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(tx.final), wait)
                if tx.provisional.is_set():  # a provisional answer stops retransmission
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SipFailure(408, "Request Timeout")
                    try:
                        return await asyncio.wait_for(asyncio.shield(tx.final), remaining)
                    except asyncio.TimeoutError:
                        raise SipFailure(408, "Request Timeout") from None
                interval = min(interval * 2, 4.0)
            return tx.final.result()
        finally:
            self._tx.pop(key, None)

    def _on_response(self, msg: SipMessage) -> None:
        try:
            num, method = msg.cseq
        except ValueError:
            return
        tx = self._tx.get((msg.call_id, num, method))
        if tx is None:
            # a retransmitted 2xx to an INVITE we already ACKed: ACK again
            call = self.calls.get(msg.call_id)
            if call is not None and method == "INVITE" and 200 <= msg.status < 300:
                self.send(self._ack_2xx(call, msg), call.target_addr())
            return
        if msg.status < 200:
            tx.provisional.set()
            if tx.on_provisional is not None:
                tx.on_provisional(msg)
        elif not tx.final.done():
            tx.final.set_result(msg)

    # --------------------------------------------------------------- requests --
    async def _on_request(self, msg: SipMessage, addr: tuple) -> None:
        missing = missing_mandatory(msg)
        if missing:
            if msg.get("Via"):
                self.send(response(msg, 400, f"Bad Request (missing or invalid {', '.join(missing)})",
                                   to_tag=new_tag()), addr)
            return
        handler = {
            "INVITE": self._on_invite, "ACK": self._on_ack, "BYE": self._on_bye, "CANCEL": self._on_cancel,
            "OPTIONS": self._on_options, "NOTIFY": self._on_notify, "REFER": self._on_refer,
        }.get(msg.method)
        if handler is None:
            self.send(response(msg, 405, extra=[("Allow", ALLOW)], to_tag=new_tag()), addr)
            return
        await handler(msg, addr)

    async def _on_options(self, msg: SipMessage, addr: tuple) -> None:
        self.send(response(msg, 200, to_tag=new_tag(), extra=[("Allow", ALLOW), ("Accept", "application/sdp")]), addr)

    def _reject(self, msg: SipMessage, addr: tuple, status: int, reason: str) -> None:
        logger.info("INVITE %s refused: %s %s", msg.call_id, status, reason)
        self.rejected.append((status, reason))
        self.send(response(msg, status, reason, to_tag=new_tag()), addr)

    async def _on_invite(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is not None:
            await self._on_reinvite(call, msg, addr)
            return
        if tag_of(msg.get("To")):
            self.send(response(msg, 481), addr)  # in-dialog INVITE for a dialog we do not know
            return
        caller, called = user_of(uri_of(msg.get("From"))), user_of(uri_of(msg.uri))
        lk_call_id = new_id("SCL_")
        if self.before_invite is not None:
            if msg.call_id in self._refreshing:
                return  # a retransmission of an INVITE still being routed
            self._refreshing.add(msg.call_id)
            try:
                await self.before_invite()
            except Exception as e:
                logger.warning("INVITE %s: the trunks and rules could not be read: %s", msg.call_id, e)
                self._reject(msg, addr, 503, "Service Unavailable")
                return
            finally:
                self._refreshing.discard(msg.call_id)
        disp = None  # stays None while the caller has a PIN to enter
        try:
            trunk = self.store.match_trunk(called, caller, addr[0])
            if trunk.auth_username and trunk.auth_password:  # as livekit-sip: before the rules
                refusal = self.auth.check(msg, trunk.auth_username, trunk.auth_password)
                if refusal is not None:
                    status, reason, challenge = refusal
                    if challenge:  # the handshake's first step, not a refusal
                        self.send(response(msg, status, reason, to_tag=new_tag(), extra=challenge), addr)
                    else:
                        self._reject(msg, addr, status, reason)
                    return
            with contextlib.suppress(NeedPin):
                disp = self.store.dispatch(trunk, called=called, caller=caller, call_id=lk_call_id, host=self.host)
        except NoMatch as e:
            self._reject(msg, addr, e.status, e.reason)
            return
        try:
            offer = sdp.parse_offer(msg.body)
            pt = sdp.choose_codec(offer)
        except (sdp.NoCommonCodec, ValueError) as e:
            self._reject(msg, addr, 488, "Not Acceptable Here")
            logger.info("INVITE %s: %s", msg.call_id, e)
            return
        tag = new_tag()
        self.send(response(msg, 100), addr)
        dialog = Dialog(call_id=msg.call_id, local=f"{msg.get('To')};tag={tag}", remote=msg.get("From"),
                        remote_target=contact_target(msg, uri_of(msg.get("From"))), remote_addr=addr)
        call = Call(self, dialog, direction="inbound", room_name=disp.room_name if disp else "",
                    identity=disp.identity if disp else "")
        call.lk_call_id, call.invite = lk_call_id, msg
        self.calls[msg.call_id] = call
        await call.rtp.open()
        call.local_sdp = sdp.build(self.host, call.rtp.port, [pt], offer.telephone_event)
        call.last_response = response(msg, 180, to_tag=tag, extra=[("Contact", f"<{self.contact_uri}>")])
        self.send(call.last_response, addr)
        if disp is None:  # answer first, then the PIN decides the rule and the room
            call.keypad = asyncio.Queue()
            call.rtp.start((offer.host or addr[0], offer.port), pt, offer.telephone_event)
            if await self._answer(call, msg, addr, tag):
                await self._join_with_pin(call, trunk, called=called, caller=caller)
            return
        if not await self._join(call, disp):
            self.send(response(msg, 503, "Service Unavailable", to_tag=tag), addr)
            return
        if self.ringing_s:
            await asyncio.sleep(self.ringing_s)
        if call.cancelled:
            return
        call.rtp.start((offer.host or addr[0], offer.port), pt, offer.telephone_event)
        await self._answer(call, msg, addr, tag)

    async def _join(self, call: Call, disp) -> bool:
        """The caller into the rule's room as a participant of kind SIP."""
        call.room_name, call.identity = disp.room_name, disp.identity
        attributes = {**disp.attributes, "lk.sip.inviteTime": str(int(time.time() * 1000))}
        token = sip_token(self.api_key, self.api_secret, room=disp.room_name, identity=disp.identity,
                          name=disp.name, attributes=attributes, room_config=disp.rule.room_config)
        try:
            await call.leg.join(self.livekit_url, token)
            return True
        except Exception as e:
            logger.warning("call %s: joining room %s failed: %s", call.sip_call_id, disp.room_name, e)
            await call.hangup("joining the room failed")  # BYE only if the call was answered
            return False

    async def _answer(self, call: Call, msg: SipMessage, addr: tuple, tag: str) -> bool:
        """200 OK, retransmitted (T1 doubling up to 4 s) until the ACK; False if none came."""
        ok = response(msg, 200, to_tag=tag, body=call.local_sdp,
                      extra=[("Contact", f"<{self.contact_uri}>"), ("Allow", ALLOW)])
        call.last_response = ok
        interval = T1
        for _ in range(7):
            self.send(ok, addr)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call.acked.wait(), interval)
            if call.acked.is_set() or call.ended.is_set():
                break
            interval = min(interval * 2, 4.0)
        if not call.acked.is_set():
            await call.hangup("no ACK for 200 OK", send_bye=not call.ended.is_set())
            return False
        return True

    async def _join_with_pin(self, call: Call, trunk, *, called: str, caller: str) -> None:
        """livekit-sip's PIN prompt: ask, gather keypad digits up to '#' (16 at most), then
        the rule of that PIN puts the caller in its room; a wrong PIN is told and hung up."""
        prompt = PromptPlayer()
        call.rtp.pull = prompt.pull
        prompt.play(ENTER_PIN)
        pin, disp = "", None
        try:
            while True:
                digit = await asyncio.wait_for(call.keypad.get(), PIN_TIMEOUT_S)
                if digit is None:  # the caller hung up
                    return
                if digit != "#":
                    pin += digit
                    if len(pin) <= 16:
                        continue
                with contextlib.suppress(NoMatch, NeedPin):
                    disp = self.store.dispatch(trunk, called=called, caller=caller, call_id=call.lk_call_id,
                                               host=self.host, pin=pin)
                break
        except asyncio.TimeoutError:
            pass
        if disp is None:
            logger.info("call %s: no PIN or a wrong one", call.sip_call_id)
            prompt.play(WRONG_PIN)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(prompt.played(), 5)
            await call.hangup("wrong pin")
            return
        prompt.play(ROOM_JOIN)
        if not await self._join(call, disp):
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(prompt.played(), 5)
        call.rtp.pull = call.leg.pull
        call.keypad = None  # digits go to the room from here on
        await call.set_status("active")

    async def _on_reinvite(self, call: Call, msg: SipMessage, addr: tuple) -> None:
        first = call.invite
        if first is not None and msg.cseq == first.cseq:
            if call.last_response is not None:
                self.send(call.last_response, addr)  # a retransmitted INVITE
            return
        # a re-INVITE (hold, session refresh): same SDP back; follow a moved RTP address
        with contextlib.suppress(ValueError):
            offer = sdp.parse_offer(msg.body)
            if offer.port and call.rtp.remote is not None:
                call.rtp.remote = (offer.host or addr[0], offer.port)
        self.send(response(msg, 200, body=call.local_sdp, extra=[("Contact", f"<{self.contact_uri}>")]), addr)

    async def _on_ack(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is not None and not call.acked.is_set() and call.direction == "inbound":
            call.acked.set()
            await call.set_status("active")

    async def _on_cancel(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.invite is None or call.acked.is_set():
            self.send(response(msg, 481), addr)
            return
        call.cancelled = True
        self.send(response(msg, 200), addr)
        self.send(response(call.invite, 487, to_tag=tag_of(call.dialog.local)), addr)
        await call.hangup("cancelled by the caller", send_bye=False)

    async def _on_bye(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self.send(response(msg, 481), addr)
            return
        self.send(response(msg, 200), addr)
        await call.hangup("the phone hung up", send_bye=False)

    async def _on_notify(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self.send(response(msg, 481), addr)
            return
        self.send(response(msg, 200), addr)
        frag = sipfrag_status(msg.body)
        if frag is not None and msg.get("Event").split(";")[0].strip().lower() == "refer":
            call.dialog.transfer_notify.put_nowait(frag)

    async def _on_refer(self, msg: SipMessage, addr: tuple) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self.send(response(msg, 481), addr)
            return
        # accepted, then reported as failed: this stand-in does not dial transfer targets
        self.send(response(msg, 202), addr)
        for frag in (b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 503 Service Unavailable\r\n"):
            notify = call.in_dialog_request(
                "NOTIFY", [("Event", "refer"), ("Subscription-State",
                                                "active" if b"100" in frag else "terminated;reason=noresource")],
                body=frag, content_type="message/sipfrag;version=2.0")
            with contextlib.suppress(SipFailure):
                await self.request(notify, call.target_addr(), timeout=4)

    # ---------------------------------------------------------------- dial-out --
    def _ack_2xx(self, call: Call, resp: SipMessage) -> SipMessage:
        ack = SipMessage(method="ACK", uri=call.dialog.remote_target)
        ack.add("Via", f"SIP/2.0/UDP {self.address};branch={new_branch()};rport")
        ack.add("Max-Forwards", "70")
        ack.add("From", call.dialog.local)
        ack.add("To", resp.get("To"))
        ack.add("Call-ID", call.dialog.call_id)
        ack.add("CSeq", f"{resp.cseq[0]} ACK")
        return ack

    async def dial(self, req: proto_sip.CreateSIPParticipantRequest,
                   trunk: proto_sip.SIPOutboundTrunkInfo) -> tuple[Call, asyncio.Task]:
        """Join the room as the callee's participant, then INVITE the number at the trunk's
        address. Returns the call once it is in the room, and the task that rings it
        (its result: None when answered, or it raises SipFailure)."""
        host, _, port = trunk.address.partition(":")
        addr = (host, int(port or 5060))
        number = (req.sip_number or (trunk.numbers[0] if trunk.numbers else "")).strip()
        call_id = new_id("") + "@" + self.host
        dialog = Dialog(call_id=call_id, local=f"<sip:{number or 'livekit'}@{self.address}>;tag={new_tag()}",
                        remote=f"<sip:{req.sip_call_to}@{trunk.address}>",
                        remote_target=f"sip:{req.sip_call_to}@{trunk.address}", remote_addr=addr)
        identity = req.participant_identity or f"sip_{req.sip_call_to}"
        call = Call(self, dialog, direction="outbound", room_name=req.room_name, identity=identity)
        call.lk_call_id = new_id("SCL_")
        await call.rtp.open()
        attributes = {
            "sip.callID": call.lk_call_id, "sip.trunkID": trunk.sip_trunk_id, "sip.callStatus": "dialing",
            "sip.hostname": self.host, **({} if req.hide_phone_number else {
                "sip.phoneNumber": req.sip_call_to, "sip.trunkPhoneNumber": number}),
            **dict(req.participant_attributes),
        }
        token = sip_token(self.api_key, self.api_secret, room=req.room_name, identity=identity,
                          name=req.participant_name or f"Phone {req.sip_call_to}", attributes=attributes,
                          room_config=None)
        await call.leg.join(self.livekit_url, token)
        self.calls[call_id] = call
        ringing = req.ringing_timeout.ToSeconds() if req.HasField("ringing_timeout") else 30
        task = asyncio.create_task(self._ring(call, addr, ringing, req.dtmf))
        return call, task

    async def _ring(self, call: Call, addr: tuple, ringing_s: float, dtmf: str) -> None:
        d = call.dialog
        invite = SipMessage(method="INVITE", uri=d.remote_target)
        invite.add("Via", f"SIP/2.0/UDP {self.address};branch={new_branch()};rport")
        invite.add("Max-Forwards", "70")
        invite.add("From", d.local)
        invite.add("To", d.remote)
        invite.add("Call-ID", d.call_id)
        invite.add("CSeq", f"{d.cseq} INVITE")
        invite.add("Contact", f"<{self.contact_uri}>")
        invite.add("Allow", ALLOW)
        te_pt = 101
        invite.add("Content-Type", "application/sdp")
        invite.body = call.local_sdp = sdp.build(self.host, call.rtp.port, [0, 8], te_pt)

        def provisional(resp: SipMessage) -> None:
            if resp.status in (180, 183) and call.status == "dialing":
                asyncio.get_running_loop().create_task(call.set_status("ringing"))

        call.status = "dialing"
        try:
            try:
                resp = await self.request(invite, addr, timeout=ringing_s, on_provisional=provisional)
            except SipFailure:
                # no answer: CANCEL the INVITE (same branch), the phone answers 487
                cancel = SipMessage(method="CANCEL", uri=invite.uri)
                for k in ("Via", "Max-Forwards", "From", "To", "Call-ID"):
                    cancel.add(k, invite.get(k))
                cancel.add("CSeq", f"{d.cseq} CANCEL")
                with contextlib.suppress(SipFailure):
                    await self.request(cancel, addr, timeout=4)
                raise SipFailure(408, "Request Timeout (no answer)") from None
            if resp.status >= 300:
                ack = SipMessage(method="ACK", uri=invite.uri)
                for k in ("Via", "Max-Forwards", "From", "Call-ID"):
                    ack.add(k, invite.get(k))
                ack.add("To", resp.get("To"))
                ack.add("CSeq", f"{d.cseq} ACK")
                self.send(ack, addr)
                raise SipFailure(resp.status, resp.reason)
            d.remote = resp.get("To")
            d.remote_target = contact_target(resp, d.remote_target)
            self.send(self._ack_2xx(call, resp), call.target_addr())
            answer = sdp.parse_offer(resp.body)
            pt = sdp.choose_codec(answer)
            call.rtp.start((answer.host or addr[0], answer.port), pt, answer.telephone_event or te_pt)
            call.acked.set()
            if dtmf:
                await call.set_status("automation")
                call.rtp.send_dtmf(dtmf.replace("w", ""))
                await asyncio.sleep(0.4 * len(dtmf))
            await call.set_status("active")
        except BaseException:
            call.ended.set()
            self.forget(call)
            await call.set_status("hangup")
            await call.rtp.close()
            await call.leg.leave()
            raise
