"""`POST /api/token`: a least-privilege LiveKit access token for one browser participant.

Request (`Content-Type: application/json`, at most MAX_BODY_BYTES):
    {"name": "Alice" (optional display name), "invite": "<invite>" (optional),
     "mode": "voice" | "text" (optional; text: chat only, the agent answers in text only)}
Response 200:
    {"server_url", "participant_token", "room", "identity", "expires_at" (Unix seconds),
     "invite", "invite_expires_at", "agent_join_timeout_s"}
Errors are JSON `{"error": <reason>, "field": <the offending field>}`:
    400 bad field or body, 403 invite refused (forged, altered, expired) or origin not
    allowed, 413 body too large, 415 not JSON, 429 too many requests from one address
    (with Retry-After).

Rooms and identities are the server's: a request without an invite gets a fresh room (a
new conversation); joining an existing meeting needs its invite (agents/web/invites.py),
which this endpoint returns only with a token for that room, i.e. to someone who has just
been admitted to the meeting. Identities are always assigned here ("user-" + 64 random
bits, never reused by this process); a person chooses only a display name. So nobody can
take someone else's identity, which would make LiveKit evict them.

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
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import jwt
from aiohttp import web
from livekit import api

from ..chat_only import ATTR as CHAT_ONLY_ATTR
from ..settings import Settings
from .invites import InviteError, Invites

logger = logging.getLogger("agents.web.token")

MAX_BODY_BYTES = 4096
NAME_MAX_CHARS = 64
PUBLISH_SOURCES = ["microphone", "camera", "screen_share", "screen_share_audio"]
ALLOWED_FIELDS = frozenset({"name", "invite", "mode"})
# Fields of the old request shape, refused with what to do instead.
SERVER_CHOSEN = {
    "room": "room is chosen by the server: leave it out for a new conversation, or send the meeting's invite",
    "identity": "identity is assigned by the server; send a display name as name",
}


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


def too_many(limiter: RateLimiter, client: str, what: str) -> web.Response | None:
    """Count a request from client; the 429 (naming the limit, with Retry-After) if over it."""
    retry_after = limiter.hit(client)
    if retry_after is None:
        return None
    seconds = max(1, math.ceil(retry_after))
    logger.warning("%s rate limit hit by %s", what, client)
    return error_response(
        429,
        "client",
        f"too many {what} requests; at most {limiter.limit} a minute, retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def rate_limited(handler, limiter: RateLimiter, trust_forwarded_for: bool, what: str):
    """handler behind a per-client-address limit."""

    async def limited(request: web.Request) -> web.StreamResponse:
        refused = too_many(limiter, client_address(request, trust_forwarded_for), what)
        return refused if refused is not None else await handler(request)

    return limited


def client_address(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


def parse_token_request(body: bytes) -> tuple[str | None, str | None, bool]:
    """Validate a token request body; return (display name or None, invite or None, chat only)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest(400, "body", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body", "body must be a JSON object")
    for key in sorted(data):
        if key in SERVER_CHOSEN:
            raise BadRequest(400, key, SERVER_CHOSEN[key])
        if key not in ALLOWED_FIELDS:
            raise BadRequest(400, key, f"unknown field {key!r}; allowed: invite, mode, name")

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

    invite = data.get("invite")
    if invite is not None:
        if not isinstance(invite, str) or not invite.strip():
            raise BadRequest(400, "invite", "invite must be a non-empty string (the link's invite parameter)")
        invite = invite.strip()
    mode = data.get("mode", "voice")
    if mode not in ("voice", "text"):
        raise BadRequest(400, "mode", f"mode must be 'voice' or 'text' (chat only), not {mode!r}")
    return name, invite, mode == "text"


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
    invite: str
    invite_expires_at: int
    agent_join_timeout_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "server_url": self.server_url,
            "participant_token": self.participant_token,
            "room": self.room,
            "identity": self.identity,
            "expires_at": self.expires_at,
            "invite": self.invite,
            "invite_expires_at": self.invite_expires_at,
            "agent_join_timeout_s": self.agent_join_timeout_s,
        }


class TokenService:
    def __init__(self, settings: Settings, credentials: LiveKitCredentials) -> None:
        self.settings = settings
        self.credentials = credentials
        self.server_url = browser_url(settings.web.livekit_public_url or credentials.url)
        self.limiter = RateLimiter(settings.web.rate_limit_per_minute)
        self.invites = Invites(credentials.api_secret, settings.web.invite_ttl_s)
        # Identities this process handed out: a 64-bit collision is all but impossible,
        # and this makes it impossible outright for as long as the process runs.
        self._identities: set[str] = set()

    def _new_identity(self) -> str:
        while (identity := "user-" + secrets.token_hex(8)) in self._identities:
            pass
        self._identities.add(identity)
        return identity

    @staticmethod
    def _new_room() -> str:
        return "call-" + secrets.token_hex(8)

    def issue(self, name: str | None = None, invite: str | None = None, chat_only: bool = False) -> IssuedToken:
        """A token for a fresh room, or for the invite's room; InviteError if it admits no one."""
        room = self.invites.room_of(invite) if invite is not None else self._new_room()
        identity = self._new_identity()
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
        if chat_only:  # the agent replies in text only (agents/chat_only.py)
            token = token.with_attributes({CHAT_ONLY_ATTR: "true"})
        if self.settings.agent.name:
            token = token.with_room_config(
                api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=self.settings.agent.name)])
            )
        signed = token.to_jwt()
        # Report the expiry the token itself carries (read back, so the two cannot differ).
        expires_at = int(jwt.decode(signed, options={"verify_signature": False})["exp"])
        # The person is now admitted to the room: they may invite others to it.
        new_invite, invite_exp = self.invites.issue(room)
        return IssuedToken(
            self.server_url,
            signed,
            room,
            identity,
            expires_at,
            new_invite,
            invite_exp,
            self.settings.web.agent_join_timeout_s,
        )

    async def handle(self, request: web.Request) -> web.Response:
        client = client_address(request, self.settings.web.trust_forwarded_for)
        if (refused := too_many(self.limiter, client, "token")) is not None:
            return refused
        try:
            if request.content_type != "application/json":
                raise BadRequest(415, "content-type", "Content-Type must be application/json")
            name, invite, chat_only = parse_token_request(await read_body(request))
            try:
                issued = self.issue(name, invite, chat_only)
            except InviteError as e:
                raise BadRequest(403, "invite", str(e)) from None
        except BadRequest as e:
            if e.field == "invite":
                logger.info("refused an invite from %s: %s", client, e.reason)
            return error_response(e.status, e.field, e.reason)

        logger.info(
            "issued a token for room %r, identity %r, to %s (%s)",
            issued.room,
            issued.identity,
            client,
            "invited" if invite else "new conversation",
        )
        return web.json_response(issued.as_json(), headers={"Cache-Control": "no-store"})
