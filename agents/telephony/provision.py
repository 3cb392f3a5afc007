"""Make a LiveKit deployment's SIP trunks and dispatch rules match config/sip.yaml, through
livekit-api's SIP service. Objects are matched by name; what this tool created carries
MANAGED in its metadata, so only those are deleted when they leave the file. A second run
changes nothing and says so."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api
from livekit.protocol import sip as proto_sip

from .config import DispatchRule, InboundTrunk, OutboundTrunk, TelephonyConfig
from .dispatch import mark_phone

MANAGED = "managed-by: gemini-agent sip provision"

_TRANSPORTS = {"auto": proto_sip.SIP_TRANSPORT_AUTO, "udp": proto_sip.SIP_TRANSPORT_UDP,
               "tcp": proto_sip.SIP_TRANSPORT_TCP, "tls": proto_sip.SIP_TRANSPORT_TLS}


@dataclass
class Action:
    verb: str        # create | update | delete
    kind: str        # "inbound trunk" | "outbound trunk" | "dispatch rule"
    name: str
    id: str = ""
    changed: tuple[str, ...] = ()

    def __str__(self) -> str:
        s = f"{self.verb} {self.kind} {self.name!r}"
        if self.id:
            s += f" ({self.id})"
        if self.changed:
            s += ": " + ", ".join(self.changed)
        return s


def inbound_info(t: InboundTrunk) -> proto_sip.SIPInboundTrunkInfo:
    return proto_sip.SIPInboundTrunkInfo(
        name=t.name, metadata=MANAGED, numbers=t.numbers, allowed_addresses=t.allowed_addresses,
        allowed_numbers=t.allowed_numbers, auth_username=t.auth_username, auth_password=t.auth_password,
        krisp_enabled=t.krisp_enabled)


def outbound_info(t: OutboundTrunk) -> proto_sip.SIPOutboundTrunkInfo:
    return proto_sip.SIPOutboundTrunkInfo(
        name=t.name, metadata=MANAGED, address=t.address, numbers=t.numbers, transport=_TRANSPORTS[t.transport],
        auth_username=t.auth_username, auth_password=t.auth_password)


def rule_info(r: DispatchRule, trunk_ids: list[str]) -> proto_sip.SIPDispatchRuleInfo:
    rule = proto_sip.SIPDispatchRule()
    if r.rule.dispatch_rule_direct:
        rule.dispatch_rule_direct.CopyFrom(proto_sip.SIPDispatchRuleDirect(**r.rule.dispatch_rule_direct.model_dump()))
    elif r.rule.dispatch_rule_individual:
        rule.dispatch_rule_individual.CopyFrom(
            proto_sip.SIPDispatchRuleIndividual(**r.rule.dispatch_rule_individual.model_dump()))
    else:
        rule.dispatch_rule_callee.CopyFrom(proto_sip.SIPDispatchRuleCallee(**r.rule.dispatch_rule_callee.model_dump()))
    return proto_sip.SIPDispatchRuleInfo(
        name=r.name, metadata=MANAGED, rule=rule, trunk_ids=trunk_ids, hide_phone_number=r.hide_phone_number,
        inbound_numbers=r.inbound_numbers, numbers=r.numbers, attributes=r.attributes,
        room_config=api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=a.agent_name, metadata=mark_phone(a.metadata))
                    for a in r.room_config.agents]))


# the fields this tool sets: only these are compared with what the deployment has
_FIELDS = {
    "inbound trunk": ("name", "metadata", "numbers", "allowed_addresses", "allowed_numbers", "auth_username",
                      "auth_password", "krisp_enabled"),
    "outbound trunk": ("name", "metadata", "address", "numbers", "transport", "auth_username", "auth_password"),
    "dispatch rule": ("name", "metadata", "rule", "trunk_ids", "hide_phone_number", "inbound_numbers", "numbers",
                      "attributes", "room_config"),
}


def differences(kind: str, want: Message, have: Message) -> tuple[str, ...]:
    def value(msg: Message, f: str):
        v = getattr(msg, f)
        if isinstance(v, Message):
            return json_format.MessageToDict(v)
        if hasattr(v, "items"):
            return dict(v)
        if hasattr(v, "__iter__") and not isinstance(v, str):
            return sorted(v)
        return v

    return tuple(f for f in _FIELDS[kind] if value(want, f) != value(have, f))


class Provisioner:
    def __init__(self, lkapi: api.LiveKitAPI, config: TelephonyConfig) -> None:
        self.sip = lkapi.sip
        self.config = config

    async def current(self):
        inbound = (await self.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
        outbound = (await self.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
        rules = (await self.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        return list(inbound), list(outbound), list(rules)

    async def run(self, *, dry_run: bool) -> list[Action]:
        """Plan (and unless dry_run, apply) the changes; returns them in the order applied."""
        inbound, outbound, rules = await self.current()
        actions: list[Action] = []
        trunk_ids: dict[str, str] = {}

        async def sync(kind, wanted, existing, build, create, update):
            by_name = {x.name: x for x in existing}
            for item in wanted:
                want = build(item)
                have = by_name.get(item.name)
                if have is None:
                    actions.append(Action("create", kind, item.name))
                    made = None if dry_run else await create(want)
                    new_id = getattr(made, "sip_trunk_id", "") or getattr(made, "sip_dispatch_rule_id", "")
                    actions[-1].id = new_id
                    trunk_ids[item.name] = new_id or f"<new {item.name}>"
                    continue
                have_id = getattr(have, "sip_trunk_id", "") or getattr(have, "sip_dispatch_rule_id", "")
                trunk_ids[item.name] = have_id
                changed = differences(kind, want, have)
                if changed:
                    actions.append(Action("update", kind, item.name, have_id, changed))
                    if not dry_run:
                        await update(have_id, want)
            return {x.name for x in wanted}

        kept_in = await sync(
            "inbound trunk", self.config.inbound_trunks, inbound, inbound_info,
            lambda w: self.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=w)),
            lambda i, w: self.sip.update_inbound_trunk(i, w))
        kept_out = await sync(
            "outbound trunk", self.config.outbound_trunks, outbound, outbound_info,
            lambda w: self.sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=w)),
            lambda i, w: self.sip.update_outbound_trunk(i, w))
        # deletes first for rules, so a renamed rule does not conflict with its old self
        kept_rules = {r.name for r in self.config.dispatch_rules}
        for r in rules:
            if r.metadata == MANAGED and r.name not in kept_rules:
                actions.append(Action("delete", "dispatch rule", r.name, r.sip_dispatch_rule_id))
                if not dry_run:
                    await self.sip.delete_dispatch_rule(api.DeleteSIPDispatchRuleRequest(
                        sip_dispatch_rule_id=r.sip_dispatch_rule_id))
        rules = [r for r in rules if r.name in kept_rules or r.metadata != MANAGED]
        await sync(
            "dispatch rule", self.config.dispatch_rules, rules,
            lambda r: rule_info(r, [trunk_ids[t] for t in r.trunks]),
            lambda w: self.sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=w)),
            lambda i, w: self.sip.update_dispatch_rule(i, w))
        for kind, existing, kept in (("inbound trunk", inbound, kept_in), ("outbound trunk", outbound, kept_out)):
            for t in existing:
                if t.metadata == MANAGED and t.name not in kept:
                    actions.append(Action("delete", kind, t.name, t.sip_trunk_id))
                    if not dry_run:
                        await self.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))
        return actions
