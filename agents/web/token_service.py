"""`POST /api/token`: a least-privilege LiveKit access token for one browser participant.

Request (`Content-Type: application/json`, at most MAX_BODY_BYTES):
    {"room": "support-1", "identity": "alice" (optional), "name": "Alice" (optional)}
Response 200:
    {"server_url", "participant_token", "room", "identity", "expires_at" (Unix seconds)}
Errors are JSON `{"error": <reason>, "field": <the offending field>}`:
    400 bad field or body, 413 body too large, 415 not JSON, 403 origin not allowed,
    429 too many requests from one address (with Retry-After).

The token lets its holder join that one room, publish only microphone, camera and screen
share, subscribe and send data (chat). It carries no admin, recording, room-create or
room-list grant, and dispatches the agent by name through the token's room configuration
when settings.agent.name is set ("" = the worker joins every room by itself).

The API secret stays in this process: it signs tokens and is never logged or returned.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import math
import os
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from livekit import api

from ..settings import Settings

logger = logging.getLogger("agents.web.token")

MAX_BODY_BYTES = 4096
NAME_MAX_CHARS = 64
# Room names and identities: letters, digits, '_', '-', '.', starting with a letter or digit.
ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
IDENTITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# The framework names its agent participants "agent-<job id>". A browser taking such an
# identity would kick the agent out of the room (LiveKit evicts duplicate identities).
RESERVED_IDENTITY_PREFIXES = ("agent-",)
PUBLISH_SOURCES = ["microphone", "camera", "screen_share", "screen_share_audio"]
ALLOWED_FIELDS = frozenset({"room", "identity", "name"})


class ConfigError(Exception):
    """The token service cannot run: LiveKit credentials are missing or malformed."""


@dataclass(frozen=True)
class LiveKitCredentials:
    """Where browsers connect and what signs their tokens. The secret is kept out of repr."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)

    @classmethod
    def from_env(cls) -> LiveKitCredentials:
        values = {k: os.environ.get(k, "").strip() for k in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")}
        missing = [k for k, v in values.items() if not v]
        if missing:
            raise ConfigError("the token endpoint needs " + ", ".join(missing) + " in the environment")
        return cls(values["LIVEKIT_URL"], values["LIVEKIT_API_KEY"], values["LIVEKIT_API_SECRET"])


def browser_url(url: str) -> str:
    """The LiveKit URL as a browser's signal connection wants it (ws:// or wss://)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConfigError(f"LiveKit URL {url!r} must be ws://, wss://, http:// or https://host[:port]")
    return parts._replace(scheme=scheme).geturl()


class BadRequest(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.field, self.reason = status, field, reason


def error_response(status: int, field: str, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason, "field": field}, status=status, headers=headers)


class RateLimiter:
    """At most `limit` requests per client address in any sliding window of `window_s`."""

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.limit, self.window_s, self._clock, self.max_clients = limit, window_s, clock, max_clients
        self._hits: dict[str, collections.deque[float]] = {}
        self._last_sweep = clock()

    def hit(self, key: str) -> float | None:
        """Record a request; None if allowed, else the seconds until one more is allowed."""
        now = self._clock()
        self._sweep(now)
        if key not in self._hits and len(self._hits) >= self.max_clients:
            # Memory stays bounded under a flood of addresses: forget the longest-known one.
            del self._hits[next(iter(self._hits))]
        hits = self._hits.setdefault(key, collections.deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window_s - now
        hits.append(now)
        return None

    def _sweep(self, now: float) -> None:
        # Forget idle addresses once a window, so memory follows the active clients only.
        if now - self._last_sweep < self.window_s:
            return
        self._last_sweep = now
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window_s]:
            del self._hits[key]


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


def _validate_name_field(field_name: str, value: Any, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str):
        raise BadRequest(400, field_name, f"{field_name} must be a string")
    if not value:
        raise BadRequest(400, field_name, f"{field_name} must not be empty")
    if len(value) > 64:
        raise BadRequest(400, field_name, f"{field_name} must be at most 64 characters")
    if not pattern.fullmatch(value):
        raise BadRequest(
            400,
            field_name,
            f"{field_name} may contain only letters, digits, '_', '-' and '.', "
            "and must start with a letter or digit",
        )
    return value


def parse_token_request(body: bytes) -> tuple[str, str | None, str | None]:
    """Validate a token request body; return (room, identity or None, name or None)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(400, "body", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body", "body must be a JSON object")
    unknown = sorted(set(data) - ALLOWED_FIELDS)
    if unknown:
        raise BadRequest(400, unknown[0], f"unknown field {unknown[0]!r}; allowed: identity, name, room")

    if "room" not in data:
        raise BadRequest(400, "room", "room is required")
    room = _validate_name_field("room", data["room"], ROOM_RE)

    identity = data.get("identity")
    if identity is not None:
        identity = _validate_name_field("identity", identity, IDENTITY_RE)
        if identity.lower().startswith(RESERVED_IDENTITY_PREFIXES):
            raise BadRequest(400, "identity", "identity must not start with 'agent-' (reserved for agents)")

    name = data.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise BadRequest(400, "name", "name must be a string")
        name = name.strip()
        if len(name) > NAME_MAX_CHARS:
            raise BadRequest(400, "name", f"name must be at most {NAME_MAX_CHARS} characters")
        if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in name):
            raise BadRequest(400, "name", "name must not contain control or invisible characters")
        name = name or None
    return room, identity, name


async def read_body(request: web.Request) -> bytes:
    """The request body, refusing more than MAX_BODY_BYTES whether or not a length is declared."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(413, "body", f"body must be at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadRequest(413, "body", f"body must be at most {MAX_BODY_BYTES} bytes")
    return bytes(body)


@dataclass(frozen=True)
class IssuedToken:
    server_url: str
    participant_token: str
    room: str
    identity: str
    expires_at: int

    def as_json(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "participant_token": self.participant_token,
            "room": self.room,
            "identity": self.identity,
            "expires_at": self.expires_at,
        }


class TokenService:
    def __init__(self, settings: Settings, credentials: LiveKitCredentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.server_url = browser_url(settings.web.livekit_public_url or credentials.url)
        self.limiter = RateLimiter(settings.web.rate_limit_per_minute)

    def issue(self, room: str, identity: str | None = None, name: str | None = None) -> IssuedToken:
        identity = identity or "user-" + secrets.token_hex(6)
        ttl = self.settings.web.token_ttl_s
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_publish_sources=list(PUBLISH_SOURCES),
            can_subscribe=True,
            can_publish_data=True,
            can_update_own_metadata=False,
        )
        token = (
            api.AccessToken(self.credentials.api_key, self.credentials.api_secret)
            .with_identity(identity)
            .with_grants(grants)
            .with_ttl(datetime.timedelta(seconds=ttl))
        )
        if name:
            token = token.with_name(name)
        if self.settings.agent.name:
            token = token.with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=self.settings.agent.name)])
            )
        signed = token.to_jwt()
        # Report the expiry the token itself carries (read back, so the two cannot differ).
        expires_at = int(jwt.decode(signed, options={"verify_signature": False})["exp"])
        return IssuedToken(self.server_url, signed, room, identity, expires_at)

    async def handle(self, request: web.Request) -> web.Response:
        client = client_address(request, self.settings.web.trust_forwarded_for)
        retry_after = self.limiter.hit(client)
        if retry_after is not None:
            seconds = max(1, math.ceil(retry_after))
            logger.warning("token rate limit hit by %s", client)
            return error_response(
                429,
                "client",
                f"too many token requests; at most {self.limiter.limit} a minute, retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        try:
            if request.content_type != "application/json":
                raise BadRequest(415, "content-type", "Content-Type must be application/json")
            room, identity, name = parse_token_request(await read_body(request))
        except BadRequest as e:
            return error_response(e.status, e.field, e.reason)

        issued = self.issue(room, identity, name)
        logger.info("issued a token for room %r, identity %r, to %s", issued.room, issued.identity, client)
        return web.json_response(issued.as_json(), headers={"Cache-Control": "no-store"})
