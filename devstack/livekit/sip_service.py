"""LiveKit's SIP service (Twirp ``/twirp/livekit.SIP/<Method>``) in the local server:
inbound/outbound trunks and dispatch rules (kept in a ``devstack.sip.routing.SipStore``),
``CreateSIPParticipant`` (dial-out) and ``TransferSIPParticipant`` (REFER) through the
local SIP gateway (``devstack/sip``) once one is attached (``service.gateway = gw``).

Grants as livekit-server checks them: trunk and rule methods need ``sip.admin``;
CreateSIPParticipant ``sip.call``; TransferSIPParticipant ``sip.call`` plus roomAdmin for
the room. Validation messages follow livekit/protocol's ``Validate()``; a failed call
carries ``sip_status_code`` / ``sip_status`` in the Twirp meta (livekit-api raises it as
``SipCallError``), with the Twirp code livekit/protocol maps the SIP status to.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web
from google.protobuf.message import Message
from livekit.protocol import sip as proto_sip

from ..sip.call import SipFailure
from ..sip.routing import SipStore, new_id
from .twirp_wire import (Authenticator, Caller, TwirpError, decode, encode, invalid_argument, not_found,
                         request_encoding, require_room_admin)

if TYPE_CHECKING:
    from ..sip.gateway import SipGateway

logger = logging.getLogger("devstack.livekit.sip")

# livekit/protocol's SIP status -> Twirp code, for the statuses a call can end with
_SIP_TO_TWIRP = {
    400: "invalid_argument", 403: "permission_denied", 404: "not_found", 408: "deadline_exceeded",
    480: "resource_exhausted", 486: "resource_exhausted", 487: "aborted", 488: "invalid_argument",
    503: "failed_precondition", 600: "resource_exhausted", 603: "permission_denied",
}


def setup(app: web.Application, server) -> "SipService":
    """Register the SIP Twirp routes (before the generic Twirp route) and return the service."""
    service = SipService(server.config.keys)
    app.router.add_route("*", "/twirp/livekit.SIP/{method}", service.handle)
    return service


def sip_error(e: SipFailure) -> TwirpError:
    code = _SIP_TO_TWIRP.get(e.status) or ("invalid_argument" if e.status < 500 else "failed_precondition")
    return TwirpError(code, f"sip status {e.status}: {e.reason}",
                      {"sip_status_code": str(e.status), "sip_status": e.reason})


class SipService:
    def __init__(self, keys: dict[str, str]) -> None:
        self.store = SipStore()
        self.gateway: SipGateway | None = None
        self.auth = Authenticator(keys)
        self.methods = {
            "CreateSIPInboundTrunk": (proto_sip.CreateSIPInboundTrunkRequest, self.create_inbound),
            "CreateSIPOutboundTrunk": (proto_sip.CreateSIPOutboundTrunkRequest, self.create_outbound),
            "UpdateSIPInboundTrunk": (proto_sip.UpdateSIPInboundTrunkRequest, self.update_inbound),
            "UpdateSIPOutboundTrunk": (proto_sip.UpdateSIPOutboundTrunkRequest, self.update_outbound),
            "GetSIPInboundTrunk": (proto_sip.GetSIPInboundTrunkRequest, self.get_inbound),
            "GetSIPOutboundTrunk": (proto_sip.GetSIPOutboundTrunkRequest, self.get_outbound),
            "ListSIPInboundTrunk": (proto_sip.ListSIPInboundTrunkRequest, self.list_inbound),
            "ListSIPOutboundTrunk": (proto_sip.ListSIPOutboundTrunkRequest, self.list_outbound),
            "ListSIPTrunk": (proto_sip.ListSIPTrunkRequest, self.list_trunks),
            "DeleteSIPTrunk": (proto_sip.DeleteSIPTrunkRequest, self.delete_trunk),
            "CreateSIPDispatchRule": (proto_sip.CreateSIPDispatchRuleRequest, self.create_rule),
            "UpdateSIPDispatchRule": (proto_sip.UpdateSIPDispatchRuleRequest, self.update_rule),
            "ListSIPDispatchRule": (proto_sip.ListSIPDispatchRuleRequest, self.list_rules),
            "DeleteSIPDispatchRule": (proto_sip.DeleteSIPDispatchRuleRequest, self.delete_rule),
            "CreateSIPParticipant": (proto_sip.CreateSIPParticipantRequest, self.create_participant),
            "TransferSIPParticipant": (proto_sip.TransferSIPParticipantRequest, self.transfer_participant),
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        try:
            if request.method != "POST":
                raise TwirpError("bad_route", f"unsupported method {request.method}: {request.path}")
            if name not in self.methods:
                raise TwirpError("bad_route", f"no handler for path {request.path!r}")
            encoding = request_encoding(request)
            caller = self.auth.authenticate(request)
            cls, handler = self.methods[name]
            req = decode(await request.read(), encoding, cls)
            return encode(await handler(caller, req), encoding)
        except TwirpError as e:
            logger.debug("twirp SIP/%s: %s", name, e)
            return e.response()
        except Exception as e:
            logger.exception("twirp SIP/%s failed", name)
            return TwirpError("internal", f"{type(e).__name__}: {e}").response()

    # ------------------------------------------------------------------ grants --
    @staticmethod
    def _admin(caller: Caller, method: str) -> None:
        if not (caller.claims.sip and caller.claims.sip.admin):
            raise TwirpError("permission_denied", f"{method} requires the SIP admin grant; the token lacks it")

    @staticmethod
    def _call(caller: Caller, method: str) -> None:
        if not (caller.claims.sip and caller.claims.sip.call):
            raise TwirpError("permission_denied", f"{method} requires the SIP call grant; the token lacks it")

    # ------------------------------------------------------------------ trunks --
    @staticmethod
    def _stamp(info: Message, *, created: bool) -> None:
        now = int(time.time())
        if created:
            info.created_at.FromSeconds(now)
        info.updated_at.FromSeconds(now)

    @staticmethod
    def _check_inbound(t: proto_sip.SIPInboundTrunkInfo) -> None:
        if not (t.auth_username or t.auth_password or t.allowed_addresses or t.numbers):
            raise invalid_argument("for security, one of the fields must be set: AuthUsername+AuthPassword, "
                                   "AllowedAddresses or Numbers", "trunk")

    async def create_inbound(self, caller: Caller, req: proto_sip.CreateSIPInboundTrunkRequest) -> Message:
        self._admin(caller, "CreateSIPInboundTrunk")
        if not req.HasField("trunk"):
            raise invalid_argument("missing trunk", "trunk")
        if req.trunk.sip_trunk_id:
            raise invalid_argument("trunk id must not be set", "trunk.sip_trunk_id")
        self._check_inbound(req.trunk)
        info = proto_sip.SIPInboundTrunkInfo()
        info.CopyFrom(req.trunk)
        info.sip_trunk_id = new_id("ST_")
        self._stamp(info, created=True)
        self.store.inbound[info.sip_trunk_id] = info
        return info

    async def create_outbound(self, caller: Caller, req: proto_sip.CreateSIPOutboundTrunkRequest) -> Message:
        self._admin(caller, "CreateSIPOutboundTrunk")
        if not req.HasField("trunk"):
            raise invalid_argument("missing trunk", "trunk")
        if req.trunk.sip_trunk_id:
            raise invalid_argument("trunk id must not be set", "trunk.sip_trunk_id")
        if not req.trunk.address:
            raise invalid_argument("no trunk address specified", "trunk.address")
        info = proto_sip.SIPOutboundTrunkInfo()
        info.CopyFrom(req.trunk)
        info.sip_trunk_id = new_id("ST_")
        self._stamp(info, created=True)
        self.store.outbound[info.sip_trunk_id] = info
        return info

    def _update_trunk(self, table: dict, req, info_cls) -> Message:
        old = table.get(req.sip_trunk_id)
        if old is None:
            raise not_found(f"trunk {req.sip_trunk_id!r} not found")
        info = _updated(old, req, "sip_trunk_id")
        if info_cls is proto_sip.SIPInboundTrunkInfo:
            self._check_inbound(info)
        self._stamp(info, created=False)
        table[info.sip_trunk_id] = info
        return info

    async def update_inbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "UpdateSIPInboundTrunk")
        return self._update_trunk(self.store.inbound, req, proto_sip.SIPInboundTrunkInfo)

    async def update_outbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "UpdateSIPOutboundTrunk")
        return self._update_trunk(self.store.outbound, req, proto_sip.SIPOutboundTrunkInfo)

    async def get_inbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "GetSIPInboundTrunk")
        if req.sip_trunk_id not in self.store.inbound:
            raise not_found(f"trunk {req.sip_trunk_id!r} not found")
        return proto_sip.GetSIPInboundTrunkResponse(trunk=self.store.inbound[req.sip_trunk_id])

    async def get_outbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "GetSIPOutboundTrunk")
        if req.sip_trunk_id not in self.store.outbound:
            raise not_found(f"trunk {req.sip_trunk_id!r} not found")
        return proto_sip.GetSIPOutboundTrunkResponse(trunk=self.store.outbound[req.sip_trunk_id])

    async def list_inbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "ListSIPInboundTrunk")
        items = [t for t in self.store.inbound.values()
                 if (not req.trunk_ids or t.sip_trunk_id in req.trunk_ids)
                 and (not req.numbers or set(req.numbers) & set(t.numbers))]
        return proto_sip.ListSIPInboundTrunkResponse(items=items)

    async def list_outbound(self, caller: Caller, req) -> Message:
        self._admin(caller, "ListSIPOutboundTrunk")
        items = [t for t in self.store.outbound.values()
                 if (not req.trunk_ids or t.sip_trunk_id in req.trunk_ids)
                 and (not req.numbers or set(req.numbers) & set(t.numbers))]
        return proto_sip.ListSIPOutboundTrunkResponse(items=items)

    async def list_trunks(self, caller: Caller, req) -> Message:
        self._admin(caller, "ListSIPTrunk")
        return proto_sip.ListSIPTrunkResponse(
            items=[_legacy(t, proto_sip.SIPTrunkInfo.TRUNK_INBOUND) for t in self.store.inbound.values()]
            + [_legacy(t, proto_sip.SIPTrunkInfo.TRUNK_OUTBOUND) for t in self.store.outbound.values()])

    async def delete_trunk(self, caller: Caller, req: proto_sip.DeleteSIPTrunkRequest) -> Message:
        self._admin(caller, "DeleteSIPTrunk")
        for table, kind in ((self.store.inbound, proto_sip.SIPTrunkInfo.TRUNK_INBOUND),
                            (self.store.outbound, proto_sip.SIPTrunkInfo.TRUNK_OUTBOUND)):
            if req.sip_trunk_id in table:
                return _legacy(table.pop(req.sip_trunk_id), kind)
        raise not_found(f"trunk {req.sip_trunk_id!r} not found")

    # ------------------------------------------------------------------- rules --
    async def create_rule(self, caller: Caller, req: proto_sip.CreateSIPDispatchRuleRequest) -> Message:
        self._admin(caller, "CreateSIPDispatchRule")
        info = proto_sip.SIPDispatchRuleInfo()
        if req.HasField("dispatch_rule"):
            info.CopyFrom(req.dispatch_rule)
        else:  # the deprecated flat fields
            info.rule.CopyFrom(req.rule)
            info.trunk_ids.extend(req.trunk_ids)
            info.hide_phone_number = req.hide_phone_number
            info.inbound_numbers.extend(req.inbound_numbers)
            info.name, info.metadata = req.name, req.metadata
            info.attributes.update(req.attributes)
            info.room_preset = req.room_preset
            info.room_config.CopyFrom(req.room_config)
        if info.sip_dispatch_rule_id:
            raise invalid_argument("rule id must not be set", "dispatch_rule.sip_dispatch_rule_id")
        self._check_rule(info)
        info.sip_dispatch_rule_id = new_id("SDR_")
        self._stamp(info, created=True)
        self.store.rules[info.sip_dispatch_rule_id] = info
        return info

    def _check_rule(self, info: proto_sip.SIPDispatchRuleInfo) -> None:
        if info.rule.WhichOneof("rule") is None:
            raise invalid_argument("missing rule", "dispatch_rule.rule")
        for tid in info.trunk_ids:
            if tid not in self.store.inbound:
                raise invalid_argument(f"trunk {tid!r} in trunk_ids does not exist", "dispatch_rule.trunk_ids")
        # livekit-server refuses two rules that would take the same calls
        for other in self.store.rules.values():
            if other.sip_dispatch_rule_id == info.sip_dispatch_rule_id:
                continue
            if (set(other.trunk_ids) == set(info.trunk_ids) and set(other.inbound_numbers) == set(info.inbound_numbers)
                    and set(other.numbers) == set(info.numbers)):
                raise TwirpError("failed_precondition", "Conflicting SIP Dispatch Rules: same Trunk+Number+PIN "
                                 f"combination for for rules {other.sip_dispatch_rule_id!r} and "
                                 f"{info.sip_dispatch_rule_id or '(new)'!r}")

    async def update_rule(self, caller: Caller, req: proto_sip.UpdateSIPDispatchRuleRequest) -> Message:
        self._admin(caller, "UpdateSIPDispatchRule")
        old = self.store.rules.get(req.sip_dispatch_rule_id)
        if old is None:
            raise not_found(f"dispatch rule {req.sip_dispatch_rule_id!r} not found")
        info = _updated(old, req, "sip_dispatch_rule_id")
        self._check_rule(info)
        self._stamp(info, created=False)
        self.store.rules[info.sip_dispatch_rule_id] = info
        return info

    async def list_rules(self, caller: Caller, req: proto_sip.ListSIPDispatchRuleRequest) -> Message:
        self._admin(caller, "ListSIPDispatchRule")
        items = [r for r in self.store.rules.values()
                 if (not req.dispatch_rule_ids or r.sip_dispatch_rule_id in req.dispatch_rule_ids)
                 and (not req.trunk_ids or not r.trunk_ids or set(req.trunk_ids) & set(r.trunk_ids))]
        return proto_sip.ListSIPDispatchRuleResponse(items=items)

    async def delete_rule(self, caller: Caller, req: proto_sip.DeleteSIPDispatchRuleRequest) -> Message:
        self._admin(caller, "DeleteSIPDispatchRule")
        rule = self.store.rules.pop(req.sip_dispatch_rule_id, None)
        if rule is None:
            raise not_found(f"dispatch rule {req.sip_dispatch_rule_id!r} not found")
        return rule

    # ------------------------------------------------------------------- calls --
    def _gateway(self) -> "SipGateway":
        if self.gateway is None:
            raise TwirpError("unavailable", "no SIP service is connected to this LiveKit server")
        return self.gateway

    async def create_participant(self, caller: Caller, req: proto_sip.CreateSIPParticipantRequest) -> Message:
        self._call(caller, "CreateSIPParticipant")
        if not req.sip_trunk_id and not req.HasField("trunk"):
            raise invalid_argument("missing sip trunk id", "sip_trunk_id")
        if not req.sip_call_to:
            raise invalid_argument("missing sip callee number", "sip_call_to")
        if not req.room_name:
            raise invalid_argument("missing room name", "room_name")
        if req.HasField("trunk"):
            trunk = proto_sip.SIPOutboundTrunkInfo(address=req.trunk.hostname, numbers=[req.sip_number])
        else:
            trunk = self.store.outbound.get(req.sip_trunk_id)
            if trunk is None:
                raise not_found(f"requested sip trunk {req.sip_trunk_id!r} does not exist")
        call, ringing = await self._gateway().dial(req, trunk)
        if req.wait_until_answered:
            try:
                await ringing
            except SipFailure as e:
                raise sip_error(e) from None
        else:
            ringing.add_done_callback(lambda t: t.cancelled() or t.exception())
        return proto_sip.SIPParticipantInfo(participant_id=call.leg.participant_sid,
                                            participant_identity=call.identity, room_name=call.room_name,
                                            sip_call_id=call.lk_call_id)

    async def transfer_participant(self, caller: Caller, req: proto_sip.TransferSIPParticipantRequest) -> Message:
        self._call(caller, "TransferSIPParticipant")
        require_room_admin(caller, "TransferSIPParticipant", req.room_name)
        if not req.transfer_to.startswith(("sip:", "sips:", "tel:")):
            raise invalid_argument(f"transfer_to must start with sip:, sips: or tel:, got {req.transfer_to!r}",
                                   "transfer_to")
        call = self._gateway().find_call(req.room_name, req.participant_identity)
        if call is None:
            raise not_found(f"participant {req.participant_identity!r} is not a SIP call in room {req.room_name!r}")
        timeout = req.ringing_timeout.ToSeconds() if req.HasField("ringing_timeout") else 30
        try:
            await call.transfer(req.transfer_to, timeout)
        except SipFailure as e:
            raise sip_error(e) from None
        return proto_sip.TransferSIPParticipantResponse(
            transfer_id=new_id("STR_"), status=proto_sip.STS_TRANSFER_SUCCESSFUL,
            reason=proto_sip.STR_COMPLETED)


def _updated(old: Message, req, id_field: str) -> Message:
    """A trunk or rule after an Update request: `replace` (a new object keeping the id and
    creation time) or `update` (the listed fields changed), as livekit-server answers them."""
    action = req.WhichOneof("action")
    info = type(old)()
    if action == "replace":
        info.CopyFrom(req.replace)
        setattr(info, id_field, getattr(old, id_field))
        info.created_at.CopyFrom(old.created_at)
    elif action == "update":
        info.CopyFrom(old)
        _apply_update(info, req.update)
    else:
        raise invalid_argument("missing or unsupported update action", "action")
    return info


def _apply_update(info: Message, update: Message) -> None:
    """A SIP*Update onto the info: ListUpdate fields (set / add / remove), optional scalars."""
    for field, value in update.ListFields():
        target = getattr(info, field.name)
        if field.message_type is not None and field.message_type.name == "ListUpdate":
            items = list(value.set) if value.set else list(target)
            items = [x for x in items + [a for a in value.add if a not in items] if x not in value.remove]
            del target[:]
            target.extend(items)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            target.clear()
            target.update(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(info, field.name, value)


def _legacy(t: Message, kind: int) -> proto_sip.SIPTrunkInfo:
    out = proto_sip.SIPTrunkInfo(sip_trunk_id=t.sip_trunk_id, kind=kind, name=t.name, metadata=t.metadata)
    if kind == proto_sip.SIPTrunkInfo.TRUNK_INBOUND:
        out.inbound_addresses.extend(t.allowed_addresses)
        out.inbound_numbers.extend(t.allowed_numbers)
        if t.numbers:
            out.outbound_number = t.numbers[0]
    else:
        out.outbound_address = t.address
        if t.numbers:
            out.outbound_number = t.numbers[0]
    return out
