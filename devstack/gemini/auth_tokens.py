"""Ephemeral tokens, as the Gemini API serves them to google-genai's `auth_tokens.create`.

REST: `POST /v1alpha/auth_tokens` with the API key (`x-goog-api-key`) and a body of
`uses`, `expireTime`, `newSessionExpireTime`, `bidiGenerateContentSetup` (the locked
setup) and `fieldMask` (which of its fields are locked; absent: all of them). The answer
is `{"name": "auth_tokens/..."}`.

Live: `BidiGenerateContentConstrained` with `Authorization: Token auth_tokens/...` (or
`?access_token=`, as browsers send it). A token opens at most `uses` sessions, none after
`newSessionExpireTime`, and none after `expireTime` (`uses` 0: no limit); the session's setup is the token's
locked fields, and a client setup that asks for another value of a locked field (another
model, say) is refused.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from aiohttp import web

from . import protocol as p

DEFAULT_EXPIRE_S = 30 * 60  # the service's defaults
DEFAULT_NEW_SESSION_S = 60
# any path prefix in base_url, then the API version
PATH_RE = re.compile(r"(?:/[^/]+)*?/(?P<version>v[0-9][A-Za-z0-9]*)/auth_tokens")


@dataclass
class EphemeralToken:
    name: str
    uses: int  # sessions it may open; 0 = no limit
    expire_at: float  # unix seconds
    new_session_expire_at: float
    setup: dict  # normalised (snake_case) locked setup; {} = no constraints
    locked: list[str] | None  # dotted snake_case paths; None = every field of `setup`
    sessions: int = 0
    created_at: float = field(default_factory=time.time)


def _error(status: int, message: str, code: str) -> web.Response:
    return web.Response(status=status, content_type="application/json",
                        text=json.dumps({"error": {"code": status, "message": message, "status": code}}))


def _timestamp(value: Any, where: str) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValueError(f"Invalid value at '{where}' (type.googleapis.com/google.protobuf.Timestamp), "
                         f"Field '{where}', Invalid time format: {value!r}") from None


def _get(d: dict, path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _set(d: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        out.extend(_leaves(v, path + ".") if isinstance(v, dict) and v else [path])
    return out


class EphemeralTokens:
    def __init__(self, check_key: Callable[[str], bool]) -> None:
        self._check_key = check_key
        self.tokens: dict[str, EphemeralToken] = {}

    # ---- REST: auth_tokens.create ---------------------------------------------------
    async def handle_create(self, request: web.Request) -> web.Response:
        m = PATH_RE.fullmatch(request.path)
        if m is None or m.group("version") != "v1alpha":  # the service serves auth tokens on v1alpha only
            return _error(404, f"Method not found: {request.path}", "NOT_FOUND")
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key or key.startswith("auth_tokens/") or not self._check_key(key):
            return _error(401 if not key else 403, "API key not valid. Please pass a valid API key.",
                          "UNAUTHENTICATED" if not key else "PERMISSION_DENIED")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        now = time.time()
        try:
            expire_at = _timestamp(body["expireTime"], "expire_time") if body.get("expireTime") else now + DEFAULT_EXPIRE_S
            new_session_at = (_timestamp(body["newSessionExpireTime"], "new_session_expire_time")
                              if body.get("newSessionExpireTime") else now + DEFAULT_NEW_SESSION_S)
        except ValueError as e:
            return _error(400, str(e), "INVALID_ARGUMENT")
        uses = int(body.get("uses", 1))
        if uses < 0:
            return _error(400, "uses must not be negative.", "INVALID_ARGUMENT")
        setup = p.normalise(body.get("bidiGenerateContentSetup") or {})
        mask = body.get("fieldMask")
        locked = None if mask is None else [
            ".".join(p.snake(part) for part in f.strip().split(".")) for f in str(mask).split(",") if f.strip()
        ]
        name = "auth_tokens/" + secrets.token_urlsafe(24)
        self.tokens[name] = EphemeralToken(name, uses, expire_at, min(new_session_at, expire_at), setup, locked)
        return web.json_response({"name": name})

    # ---- Live: BidiGenerateContentConstrained -----------------------------------------
    def admit(self, credential: str) -> tuple[int, str] | None:
        """Count a new session against the token; the HTTP refusal (status, message) if none."""
        token = self.tokens.get(credential)
        now = time.time()
        if token is None:
            return 401, "Invalid ephemeral token."
        if now >= token.expire_at:
            return 401, "The ephemeral token has expired."
        if now >= token.new_session_expire_at:
            return 401, "The ephemeral token can no longer start new sessions (new_session_expire_time has passed)."
        if token.uses and token.sessions >= token.uses:
            return 401, "The ephemeral token has already been used."
        token.sessions += 1
        return None

    def constrain(self, credential: str, setup: dict) -> dict:
        """The session's setup: the client's, with the token's locked fields; a client value
        that differs from a locked one is refused as the service refuses it."""
        token = self.tokens[credential]
        if not token.setup:
            return setup
        locked = _leaves(token.setup) if token.locked is None else token.locked
        merged = json.loads(json.dumps(setup))
        for path in locked:
            want = _get(token.setup, path)
            if want is None:
                continue
            got = _get(setup, path)
            if path == "model":
                if got is not None and str(got).removeprefix("models/") != str(want).removeprefix("models/"):
                    raise p.ProtocolError(p.CLOSE_POLICY, f"The ephemeral token is locked to {want}; "
                                                          f"it cannot open {got}.")
            elif got is not None and got != want:
                raise p.ProtocolError(p.CLOSE_INVALID, f"setup.{path} is locked by the ephemeral token.")
            _set(merged, path, want)
        return merged
