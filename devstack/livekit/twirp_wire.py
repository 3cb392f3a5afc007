"""Twirp on the wire: errors, request/response encoding and API-key auth.

Twirp (https://twitchtv.github.io/twirp/docs/spec_v7.html) is a POST of one protobuf
message (``application/protobuf``) or its JSON form (``application/json``) to
``/twirp/<package>.<Service>/<Method>``; the answer is the response message in the same
encoding, or a JSON error ``{"code": ..., "msg": ...}`` with the HTTP status that goes
with the code. ``livekit-api`` always sends protobuf and reads every error as JSON.

Auth is a LiveKit access token in ``Authorization: Bearer <jwt>``, signed with one of
the server's API key/secret pairs (key in the ``iss`` claim).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Optional, Type, TypeVar

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api import TokenVerifier
from livekit.api.access_token import Claims, VideoGrants

M = TypeVar("M", bound=Message)

# Twirp error codes and the HTTP status each one is sent with.
HTTP_STATUS: dict[str, int] = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}


class TwirpError(Exception):
    def __init__(self, code: str, msg: str, meta: Optional[Mapping[str, str]] = None) -> None:
        assert code in HTTP_STATUS, code
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def response(self) -> web.Response:
        body: dict = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return web.Response(
            status=self.status, text=json.dumps(body), content_type="application/json"
        )


def invalid_argument(msg: str, argument: str | None = None) -> TwirpError:
    return TwirpError("invalid_argument", msg, {"argument": argument} if argument else None)


def not_found(msg: str) -> TwirpError:
    return TwirpError("not_found", msg)


# ---------------------------------------------------------------- encoding

PROTOBUF = "application/protobuf"
JSON = "application/json"


def request_encoding(request: web.Request) -> str:
    ctype = (request.content_type or "").lower()
    if ctype in (PROTOBUF, "application/x-protobuf"):
        return PROTOBUF
    if ctype == JSON:
        return JSON
    raise TwirpError(
        "bad_route",
        f"unexpected Content-Type {ctype or '(none)'!r}: use application/protobuf "
        "or application/json",
    )


def decode(body: bytes, encoding: str, cls: Type[M]) -> M:
    msg = cls()
    try:
        if encoding == PROTOBUF:
            msg.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8") or "{}", msg, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as e:
        kind = "protobuf" if encoding == PROTOBUF else "JSON"
        raise TwirpError(
            "malformed", f"the request body could not be decoded as {kind} {cls.__name__}: {e}"
        ) from None
    return msg


def encode(msg: Message, encoding: str) -> web.Response:
    if encoding == PROTOBUF:
        return web.Response(body=msg.SerializeToString(), content_type=PROTOBUF)
    text = json_format.MessageToJson(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return web.Response(text=text, content_type=JSON)


# ---------------------------------------------------------------- auth


@dataclass
class Caller:
    api_key: str
    claims: Claims

    @property
    def video(self) -> VideoGrants:
        return self.claims.video or VideoGrants()


class Authenticator:
    """Verifies access tokens against the server's API key/secret pairs."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def authenticate(self, request: web.Request) -> Caller:
        header = request.headers.get("Authorization", "")
        if header:
            if not header.startswith("Bearer "):
                raise TwirpError(
                    "unauthenticated",
                    "invalid authorization header: it must be 'Bearer <access token>'",
                )
            token = header[len("Bearer ") :].strip()
        else:
            token = request.query.get("access_token", "")
        if not token:
            raise TwirpError(
                "unauthenticated",
                "missing access token: send 'Authorization: Bearer <token>' signed with "
                "an API key of this server",
            )
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise TwirpError("unauthenticated", f"invalid authorization token: {e}") from None
        api_key = str(unverified.get("iss") or "")
        secret = self._keys.get(api_key)
        if not api_key:
            raise TwirpError("unauthenticated", "invalid token: it has no API key ('iss' claim)")
        if secret is None:
            raise TwirpError("unauthenticated", f"invalid API key: {api_key}")
        try:
            claims = TokenVerifier(api_key, secret).verify(token)
        except jwt.ExpiredSignatureError:
            raise TwirpError("unauthenticated", "invalid token: it has expired") from None
        except jwt.InvalidSignatureError:
            raise TwirpError(
                "unauthenticated",
                f"invalid token: signature does not match the secret of API key {api_key}",
            ) from None
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise TwirpError("unauthenticated", f"invalid token: {e}") from None
        return Caller(api_key, claims)


def require_room_create(caller: Caller, method: str) -> None:
    if not caller.video.room_create:
        raise TwirpError(
            "permission_denied", f"{method} requires the roomCreate grant; the token lacks it"
        )


def require_room_list(caller: Caller, method: str) -> None:
    if not caller.video.room_list:
        raise TwirpError(
            "permission_denied", f"{method} requires the roomList grant; the token lacks it"
        )


def require_room_admin(caller: Caller, method: str, room: str) -> None:
    v = caller.video
    if not v.room_admin:
        raise TwirpError(
            "permission_denied",
            f"{method} requires the roomAdmin grant for room {room!r}; the token lacks roomAdmin",
        )
    if (v.room or "") != room:
        raise TwirpError(
            "permission_denied",
            f"{method} on room {room!r} denied: the token's roomAdmin grant is for room "
            f"{v.room!r}",
        )
