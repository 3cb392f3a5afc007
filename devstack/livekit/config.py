"""livekit.yaml -> a validated config model.

The same file configures a real livekit-server; this stand-in honours the subset
listed in the file's header and ignores the rest (extra keys are allowed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RTCConfig(_Model):
    tcp_port: int = 7881
    port_range_start: int = 50000
    port_range_end: int = 60000
    use_external_ip: bool = False
    # Address advertised in ICE candidates. Empty -> first non-loopback IPv4 of
    # this machine (libwebrtc gathers no candidates on loopback).
    node_ip: str | None = None


class RoomDefaults(_Model):
    auto_create: bool = True
    empty_timeout: int = 300
    departure_timeout: int = 20
    max_participants: int = 0


class LoggingConfig(_Model):
    level: str = "info"


class ServerConfig(_Model):
    port: int = 7880
    bind_addresses: list[str] = Field(default_factory=lambda: [""])
    rtc: RTCConfig = Field(default_factory=RTCConfig)
    keys: dict[str, str] = Field(default_factory=dict)
    room: RoomDefaults = Field(default_factory=RoomDefaults)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("livekit config needs at least one API key under `keys`")
        for key, secret in v.items():
            if len(str(secret)) < 32:
                # livekit-server refuses short secrets too
                raise ValueError(f"secret for API key {key!r} must be at least 32 characters")
        return {str(k): str(s) for k, s in v.items()}

    @property
    def api_key(self) -> str:
        """The first configured key: the one printed and handed to tests."""
        return next(iter(self.keys))

    @property
    def api_secret(self) -> str:
        return self.keys[self.api_key]

    def bind_hosts(self) -> list[str]:
        """aiohttp host list; "" (all interfaces) becomes 0.0.0.0."""
        hosts = [h or "0.0.0.0" for h in self.bind_addresses] or ["0.0.0.0"]
        return list(dict.fromkeys(hosts))

    def url_host(self) -> str:
        """Host used in the printed ws:// URL: loopback unless bound elsewhere only."""
        hosts = self.bind_hosts()
        if "0.0.0.0" in hosts or "127.0.0.1" in hosts:
            return "127.0.0.1"
        return hosts[0]

    def resolve_node_ip(self) -> str:
        return self.rtc.node_ip or detect_node_ip()


def detect_node_ip() -> str:
    """First non-loopback, non-link-local IPv4 address of this machine, found at
    runtime by enumerating interfaces (ifaddr is an aioice dependency)."""
    import ifaddr

    for adapter in ifaddr.get_adapters():
        for addr in adapter.ips:
            if isinstance(addr.ip, str) and not addr.ip.startswith(("127.", "169.254.")):
                return addr.ip
    raise RuntimeError(
        "no non-loopback IPv4 address found; set rtc.node_ip in livekit.yaml "
        "(libwebrtc gathers no ICE candidates on loopback)"
    )


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path = "livekit.yaml", **overrides: Any) -> ServerConfig:
    """Read livekit.yaml; keyword overrides are merged on top (nested dicts merge),
    e.g. ``load_config("livekit.yaml", port=0, room={"departure_timeout": 1})``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    data = _deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    return ServerConfig.model_validate(data)
