"""LiveKit's SIP configuration (trunks, dispatch rules) and how an INVITE is matched to
them, as livekit-server does it:

- a trunk matches when its `numbers` holds the called number (a trunk without numbers is
  the default trunk, used only when no trunk names the number); `allowed_addresses`
  (IPs or CIDRs) and `allowed_numbers` must hold the caller's address and number when set;
- a rule matches when it names the trunk in `trunk_ids` (or names none: a default rule)
  and its `inbound_numbers` / `numbers` hold the caller / called number when set; a rule
  naming the trunk beats a default one.
No trunk: 404 "Does not match any SIP Trunks"; no rule: 404 "Does not match Trunks or
Dispatch Rules" (livekit-sip's answers).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import string
from dataclasses import dataclass

from livekit.protocol import sip as proto_sip

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class NoMatch(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class NeedPin(Exception):
    """The rules that take this call all want a PIN: livekit-sip answers and asks for it."""


@dataclass
class Dispatch:
    trunk: proto_sip.SIPInboundTrunkInfo
    rule: proto_sip.SIPDispatchRuleInfo
    room_name: str
    identity: str
    name: str
    attributes: dict[str, str]


class SipStore:
    """In-memory trunks and rules of one LiveKit deployment."""

    def __init__(self) -> None:
        self.inbound: dict[str, proto_sip.SIPInboundTrunkInfo] = {}
        self.outbound: dict[str, proto_sip.SIPOutboundTrunkInfo] = {}
        self.rules: dict[str, proto_sip.SIPDispatchRuleInfo] = {}

    # -------------------------------------------------------------- matching --
    def match_trunk(self, called: str, caller: str, src_ip: str) -> proto_sip.SIPInboundTrunkInfo:
        def allowed(t: proto_sip.SIPInboundTrunkInfo) -> bool:
            if t.allowed_numbers and caller not in t.allowed_numbers:
                return False
            return not t.allowed_addresses or any(_in_net(src_ip, a) for a in t.allowed_addresses)

        named = [t for t in self.inbound.values() if called in t.numbers and allowed(t)]
        if named:
            return named[0]
        default = [t for t in self.inbound.values() if not t.numbers and allowed(t)]
        if default:
            return default[0]
        raise NoMatch(404, "Does not match any SIP Trunks")

    def match_rule(self, trunk_id: str, called: str, caller: str,
                   pin: str | None = None) -> proto_sip.SIPDispatchRuleInfo:
        """The rule for a call: the trunk's own rules before the rules of every trunk; of
        those, one without a PIN, else NeedPin. With the PIN the caller entered (`pin`),
        the rule of that PIN, else NoMatch."""
        def fits(r: proto_sip.SIPDispatchRuleInfo) -> bool:
            if r.inbound_numbers and caller not in r.inbound_numbers:
                return False
            return not r.numbers or called in r.numbers

        specific = [r for r in self.rules.values() if trunk_id in r.trunk_ids and fits(r)]
        default = [r for r in self.rules.values() if not r.trunk_ids and fits(r)]
        group = specific or default
        if not group:
            raise NoMatch(404, "Does not match Trunks or Dispatch Rules")
        if pin is None:
            open_rules = [r for r in group if not _pin(r)]
            if open_rules:
                return open_rules[0]
            raise NeedPin()
        for r in group:
            if _pin(r) == pin:
                return r
        raise NoMatch(403, "Wrong PIN")

    def dispatch(self, trunk: proto_sip.SIPInboundTrunkInfo, *, called: str, caller: str, call_id: str,
                 host: str, pin: str | None = None) -> Dispatch:
        """The room and identity for a call the trunk (match_trunk) took, by its rule
        (match_rule: NeedPin when the caller must enter a PIN first)."""
        rule = self.match_rule(trunk.sip_trunk_id, called, caller, pin)
        kind = rule.rule.WhichOneof("rule")
        if kind == "dispatch_rule_direct":
            room = rule.rule.dispatch_rule_direct.room_name
        elif kind == "dispatch_rule_individual":
            ind = rule.rule.dispatch_rule_individual
            room = f"{ind.room_prefix}_{caller}" if ind.room_prefix else caller
            if not ind.no_randomness:
                room += "_" + secrets.token_hex(6)[:12]
        elif kind == "dispatch_rule_callee":
            cal = rule.rule.dispatch_rule_callee
            room = f"{cal.room_prefix}_{called}" if cal.room_prefix else called
            if cal.randomize:
                room += "_" + secrets.token_hex(6)[:12]
        else:
            raise NoMatch(404, "Does not match Trunks or Dispatch Rules")
        attributes = {
            "sip.callID": call_id, "sip.trunkID": trunk.sip_trunk_id, "sip.ruleID": rule.sip_dispatch_rule_id,
            "sip.hostname": host, "sip.callStatus": "ringing",
        }
        if rule.hide_phone_number:
            identity = "sip_" + hashlib.sha256(caller.encode()).hexdigest()[:16]
            name = "Phone " + caller[-4:]
        else:
            identity, name = f"sip_{caller}", f"Phone {caller}"
            attributes.update({"sip.phoneNumber": caller, "sip.trunkPhoneNumber": called})
        attributes.update(rule.attributes)
        return Dispatch(trunk, rule, room, identity, name, attributes)


def _pin(rule: proto_sip.SIPDispatchRuleInfo) -> str:
    kind = rule.rule.WhichOneof("rule")
    return getattr(getattr(rule.rule, kind), "pin", "") if kind else ""


def _in_net(ip: str, allowed: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(allowed, strict=False)
    except ValueError:
        return False
