"""config/sip.yaml: LiveKit SIP inbound trunks, dispatch rules and outbound trunks in the
field names of LiveKit's SIP API (what `lk sip inbound create` / `lk sip dispatch create`
take), plus the transfer destinations the agent may use.

Trunks and rules are identified by `name` (LiveKit assigns the ids); a rule lists the
trunks it serves by name in `trunks`. A bad file is one SipConfigError naming the file,
the key, the value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..settings import CONFIG_DIR, Settings

_NUMBER = r"^\+?[0-9A-Za-z*#._-]{1,64}$"
Number = Annotated[str, Field(pattern=_NUMBER)]


class SipConfigError(Exception):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InboundTrunk(_Model):
    name: str = Field(min_length=1)
    numbers: list[Number] = []            # called numbers this trunk takes; [] = any
    allowed_addresses: list[str] = []     # carrier IPs / CIDRs
    allowed_numbers: list[Number] = []    # caller numbers allowed; [] = any
    auth_username: str = ""
    auth_password: str = ""
    krisp_enabled: bool = False

    @model_validator(mode="after")
    def _secure(self) -> "InboundTrunk":
        if not (self.auth_username or self.allowed_addresses or self.numbers):
            raise ValueError("set numbers, allowed_addresses or auth_username/auth_password "
                             "(LiveKit refuses an inbound trunk open to anyone)")
        return self


class OutboundTrunk(_Model):
    name: str = Field(min_length=1)
    address: str = Field(pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")  # the carrier's SIP host[:port]
    numbers: list[Number] = Field(min_length=1)  # caller ID numbers
    transport: Literal["auto", "udp", "tcp", "tls"] = "auto"
    auth_username: str = ""
    auth_password: str = ""


class RuleDirect(_Model):
    room_name: str = Field(min_length=1)
    pin: str = ""


class RuleIndividual(_Model):
    room_prefix: str = ""
    pin: str = ""
    no_randomness: bool = False


class RuleCallee(_Model):
    room_prefix: str = ""
    pin: str = ""
    randomize: bool = False


class Rule(_Model):
    dispatch_rule_direct: RuleDirect | None = None
    dispatch_rule_individual: RuleIndividual | None = None
    dispatch_rule_callee: RuleCallee | None = None

    @model_validator(mode="after")
    def _one(self) -> "Rule":
        given = [k for k, v in self if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of dispatch_rule_direct, dispatch_rule_individual, "
                             f"dispatch_rule_callee (got {', '.join(given) or 'none'})")
        return self


class AgentDispatch(_Model):
    agent_name: str = Field(min_length=1)
    metadata: str = ""


class RoomConfig(_Model):
    agents: list[AgentDispatch] = []


class DispatchRule(_Model):
    name: str = Field(min_length=1)
    trunks: list[str] = []                # names of inbound trunks above; [] = every trunk
    rule: Rule
    hide_phone_number: bool = False
    inbound_numbers: list[Number] = []    # caller numbers this rule takes; [] = any
    numbers: list[Number] = []            # called numbers this rule takes; [] = any
    attributes: dict[str, str] = {}
    room_config: RoomConfig = RoomConfig()


class TransferDestination(_Model):
    name: str = Field(min_length=1)       # what the model says / asks for ("front desk")
    uri: str                              # sip:..., sips:... or tel:...

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        v = v.strip()
        if not v.startswith(("sip:", "sips:", "tel:")) or len(v) < 6:
            raise ValueError("must be a sip:, sips: or tel: URI (LiveKit refuses other transfer targets)")
        return v


class DialSettings(_Model):
    outbound_trunk: str = ""              # name of the outbound trunk `agent.py dial` uses
    ringing_timeout_s: float = Field(default=30, gt=0, le=80)


class TelephonyConfig(_Model):
    inbound_trunks: list[InboundTrunk] = []
    dispatch_rules: list[DispatchRule] = []
    outbound_trunks: list[OutboundTrunk] = []
    transfer_destinations: list[TransferDestination] = []
    dial: DialSettings = DialSettings()

    @model_validator(mode="after")
    def _references(self) -> "TelephonyConfig":
        for kind, items in (("inbound_trunks", self.inbound_trunks), ("dispatch_rules", self.dispatch_rules),
                            ("outbound_trunks", self.outbound_trunks),
                            ("transfer_destinations", self.transfer_destinations)):
            names = [i.name for i in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind}: names must be unique, {', '.join(map(repr, dup))} repeated")
        inbound = {t.name for t in self.inbound_trunks}
        for i, r in enumerate(self.dispatch_rules):
            for t in r.trunks:
                if t not in inbound:
                    raise ValueError(f"dispatch_rules[{i}].trunks: {t!r} is not the name of an inbound trunk "
                                     f"(known: {', '.join(sorted(inbound)) or 'none'})")
        if self.dial.outbound_trunk and self.dial.outbound_trunk not in {t.name for t in self.outbound_trunks}:
            raise ValueError(f"dial.outbound_trunk: {self.dial.outbound_trunk!r} is not the name of an outbound trunk")
        return self

    def destination(self, name_or_uri: str) -> TransferDestination | None:
        key = name_or_uri.strip().lower()
        return next((d for d in self.transfer_destinations if key in (d.name.lower(), d.uri.lower())), None)


def telephony_path(settings: Settings) -> Path:
    p = Path(settings.phone.telephony_file)
    return p if p.is_absolute() else CONFIG_DIR / p


def load_telephony(path: str | Path) -> TelephonyConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise SipConfigError(f"{path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SipConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise SipConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return TelephonyConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in err["loc"]).replace(".[", "[")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key}")
            elif key:
                problems.append(f"{key} = {err.get('input')!r}: {msg}")
            else:
                problems.append(msg)
        raise SipConfigError(f"{path}: " + "; ".join(problems)) from None
