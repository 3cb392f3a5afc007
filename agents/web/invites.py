"""Meeting invites: who may join an existing room.

An invite is a JWT (HS256) naming one room and an expiry, signed with a key derived from
the LiveKit API secret. The derived key keeps the two apart: an invite is not a LiveKit
access token (LiveKit verifies those with the secret itself), and a LiveKit token is not an
invite. The token endpoint hands an invite only to someone it has just admitted to that
room, so only people in a meeting can share it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Callable

import jwt

_KEY_LABEL = b"agents.web meeting invite v1"
_AUDIENCE = "meeting-invite"
MAX_INVITE_CHARS = 1024


class InviteError(Exception):
    """An invite that admits no one; the message says why."""


class Invites:
    def __init__(self, api_secret: str, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(api_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self._clock = clock

    def issue(self, room: str) -> tuple[str, int]:
        """An invite to room and its expiry (Unix seconds)."""
        now = int(self._clock())
        exp = now + self.ttl_s
        claims = {"room": room, "aud": _AUDIENCE, "iat": now, "exp": exp}
        return jwt.encode(claims, self._key, algorithm="HS256"), exp

    def room_of(self, invite: str) -> str:
        """The room an invite admits to; InviteError if it is forged, altered or expired."""
        if len(invite) > MAX_INVITE_CHARS:
            raise InviteError(f"invite must be at most {MAX_INVITE_CHARS} characters")
        try:
            claims = jwt.decode(
                invite,
                self._key,
                algorithms=["HS256"],
                audience=_AUDIENCE,
                options={"require": ["room", "exp", "aud"], "verify_exp": False},
            )
        except jwt.InvalidSignatureError:
            raise InviteError("invite is not valid: its signature does not match (forged or altered)") from None
        except jwt.PyJWTError:
            raise InviteError("invite is not valid: not an invite issued by this server") from None
        # Expiry checked against our own clock (PyJWT reads the wall clock itself).
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= self._clock():
            raise InviteError("invite has expired; ask someone in the meeting for a new link")
        room = claims.get("room")
        if not isinstance(room, str) or not room:
            raise InviteError("invite is not valid: it names no room")
        return room
