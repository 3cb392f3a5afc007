"""`python agent.py sip provision [--dry-run]`, `python agent.py sip list` and
`python agent.py dial <number>`: telephony commands against the LiveKit deployment in
LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

from livekit import api

from ..settings import SettingsError, load_settings
from .config import SipConfigError, TelephonyConfig, load_telephony, telephony_path
from .dispatch import mark_phone
from .provision import Provisioner

# what a caller of `dial` is told for the SIP status the call ended with
_DIAL_FAILURES = {
    486: "busy", 600: "busy", 408: "no answer", 480: "no answer (temporarily unavailable)",
    487: "no answer (cancelled)", 404: "the number does not exist", 604: "the number does not exist",
    403: "the call was refused", 603: "the call was declined",
}


def _lkapi() -> api.LiveKitAPI:
    missing = [n for n in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(n)]
    if missing:
        raise SettingsError(f"{', '.join(missing)} not set: the LiveKit deployment to use comes from "
                            "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET (environment or .env)")
    return api.LiveKitAPI()


def _config(path: str | None) -> tuple[str, TelephonyConfig]:
    file = path or str(telephony_path(load_settings()))
    return file, load_telephony(file)


async def provision(args: argparse.Namespace) -> int:
    file, config = _config(args.file)
    async with _lkapi() as lkapi:
        actions = await Provisioner(lkapi, config).run(dry_run=args.dry_run)
    prefix = "would " if args.dry_run else ""
    for a in actions:
        print(prefix + str(a))
    if not actions:
        n = len(config.inbound_trunks) + len(config.outbound_trunks)
        print(f"nothing to change: {n} trunk(s) and {len(config.dispatch_rules)} dispatch rule(s) "
              f"already match {file}")
    return 0


async def list_sip(args: argparse.Namespace) -> int:
    async with _lkapi() as lkapi:
        prov = Provisioner(lkapi, TelephonyConfig())
        inbound, outbound, rules = await prov.current()
    names = {t.sip_trunk_id: t.name for t in inbound}
    print(f"inbound trunks ({len(inbound)}):")
    for t in inbound:
        print(f"  {t.sip_trunk_id}  {t.name!r}  numbers={list(t.numbers)}  allowed_addresses="
              f"{list(t.allowed_addresses)}")
    print(f"outbound trunks ({len(outbound)}):")
    for t in outbound:
        print(f"  {t.sip_trunk_id}  {t.name!r}  address={t.address}  numbers={list(t.numbers)}")
    print(f"dispatch rules ({len(rules)}):")
    for r in rules:
        kind = r.rule.WhichOneof("rule")
        agents = [a.agent_name for a in r.room_config.agents]
        trunks = [names.get(i, i) for i in r.trunk_ids] or ["(every trunk)"]
        print(f"  {r.sip_dispatch_rule_id}  {r.name!r}  {kind}  trunks={trunks}  agents={agents}")
    return 0


async def dial(args: argparse.Namespace) -> int:
    settings = load_settings()
    file, config = _config(args.file)
    trunk_name = args.trunk or config.dial.outbound_trunk
    if not trunk_name:
        raise SipConfigError(f"{file}: dial.outbound_trunk is not set: name the outbound trunk to dial out with")
    room = args.room or f"call-{args.number.lstrip('+')}-{secrets.token_hex(3)}"
    async with _lkapi() as lkapi:
        trunks = (await lkapi.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
        trunk = next((t for t in trunks if t.name == trunk_name), None)
        if trunk is None:
            print(f"error: the LiveKit deployment has no outbound trunk {trunk_name!r}: run "
                  "`python agent.py sip provision` first", file=sys.stderr)
            return 2
        # the agent first, so it is in the room when the callee answers
        if settings.agent.name:
            await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                agent_name=settings.agent.name, room=room, metadata=mark_phone("")))
        print(f"dialling {args.number} through {trunk_name!r} (room {room}) ...", flush=True)
        try:
            await lkapi.sip.create_sip_participant(api.CreateSIPParticipantRequest(
                sip_trunk_id=trunk.sip_trunk_id, sip_call_to=args.number, room_name=room,
                participant_identity=f"sip_{args.number}", participant_name=f"Phone {args.number}",
                wait_until_answered=True, ringing_timeout=_duration(config.dial.ringing_timeout_s)))
        except api.SipCallError as e:
            status = int(e.metadata.get("sip_status_code") or 0)
            what = _DIAL_FAILURES.get(status, "the call failed")
            print(f"error: {args.number}: {what} (SIP {status} {e.metadata.get('sip_status', '')})".rstrip(),
                  file=sys.stderr)
            await _close_room(lkapi, room)
            return 1
        except api.TwirpError as e:
            print(f"error: {args.number}: {e.message} ({e.code})", file=sys.stderr)
            await _close_room(lkapi, room)
            return 1
    print(f"answered: the agent is talking to {args.number} in room {room}")
    return 0


def _duration(seconds: float):
    from google.protobuf.duration_pb2 import Duration

    d = Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d


async def _close_room(lkapi: api.LiveKitAPI, room: str) -> None:
    try:
        await lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
    except api.TwirpError:
        pass


def main(argv: list[str]) -> int:
    """argv: ["sip", "provision", ...] | ["sip", "list"] | ["dial", "<number>", ...]"""
    ap = argparse.ArgumentParser(prog="python agent.py", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sip = sub.add_parser("sip", help="LiveKit SIP trunks and dispatch rules from config/sip.yaml")
    sip_sub = sip.add_subparsers(dest="action", required=True)
    prov = sip_sub.add_parser("provision", help="make the deployment match the telephony file")
    prov.add_argument("--dry-run", action="store_true", help="only say what would change")
    prov.add_argument("--file", help="telephony file (default: phone.telephony_file in config/agent.yaml)")
    prov.set_defaults(run=provision)
    lst = sip_sub.add_parser("list", help="show the deployment's trunks and dispatch rules")
    lst.set_defaults(run=list_sip)
    d = sub.add_parser("dial", help="call a phone number; the agent talks once it answers")
    d.add_argument("number", help="the number to call, e.g. +15550123")
    d.add_argument("--room", help="room name (default: call-<number>-<random>)")
    d.add_argument("--trunk", help="outbound trunk name (default: dial.outbound_trunk)")
    d.add_argument("--file", help="telephony file (default: phone.telephony_file in config/agent.yaml)")
    d.set_defaults(run=dial)
    args = ap.parse_args(argv)
    try:
        return asyncio.run(args.run(args))
    except (SettingsError, SipConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except api.TwirpError as e:
        print(f"error: LiveKit refused: {e.message} ({e.code})", file=sys.stderr)
        return 1


def sip_main(argv: list[str]) -> int:
    """`python agent.py sip ...` (agent.py's command table)."""
    return main(["sip", *argv])


def dial_main(argv: list[str]) -> int:
    """`python agent.py dial ...` (agent.py's command table)."""
    return main(["dial", *argv])
