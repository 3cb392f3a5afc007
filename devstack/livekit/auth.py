"""Access tokens: verification (livekit.api.TokenVerifier) and grant mapping.

Error messages and statuses follow livekit-server's auth middleware and
ValidateConnectRequest, so SDKs and browsers show the same reasons.
"""

from __future__ import annotations

import datetime

import jwt
from livekit import api
from livekit.protocol import models as proto_models


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


PERMISSION_DENIED = "permissions denied"

_KINDS = {
    "": proto_models.ParticipantInfo.STANDARD,
    "standard": proto_models.ParticipantInfo.STANDARD,
    "ingress": proto_models.ParticipantInfo.INGRESS,
    "egress": proto_models.ParticipantInfo.EGRESS,
    "sip": proto_models.ParticipantInfo.SIP,
    "agent": proto_models.ParticipantInfo.AGENT,
    "connector": proto_models.ParticipantInfo.CONNECTOR,
    "bridge": proto_models.ParticipantInfo.BRIDGE,
}

_SOURCES = {
    "camera": proto_models.TrackSource.CAMERA,
    "microphone": proto_models.TrackSource.MICROPHONE,
    "screen_share": proto_models.TrackSource.SCREEN_SHARE,
    "screen_share_audio": proto_models.TrackSource.SCREEN_SHARE_AUDIO,
}


def token_from_request(headers, query) -> str | None:
    """`Authorization: Bearer <jwt>` (Rust SDK, agents) or `access_token` (browser)."""
    auth = headers.get("Authorization", "")
    if auth:
        if not auth.startswith("Bearer "):
            raise AuthError(401, "invalid authorization header. Must start with Bearer ")
        return auth[len("Bearer "):].strip()
    return query.get("access_token") or None


def verify_token(token: str, keys: dict[str, str]) -> api.access_token.Claims:
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError(401, "invalid authorization token") from None
    api_key = unverified.get("iss", "")
    secret = keys.get(api_key)
    if not secret:
        raise AuthError(401, "invalid API key")
    # 1 min leeway, as go-jose's default in livekit-server
    verifier = api.TokenVerifier(api_key, secret)
    try:
        return verifier.verify(token)
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "invalid authorization token: token is expired (exp)") from None
    except jwt.ImmatureSignatureError:
        raise AuthError(401, "invalid authorization token: token not valid yet (nbf)") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, "invalid authorization token: signature is invalid") from None
    except jwt.PyJWTError as e:
        raise AuthError(401, f"invalid authorization token: {e}") from None


def participant_kind(claims: api.access_token.Claims) -> int:
    return _KINDS.get((claims.kind or "").lower(), proto_models.ParticipantInfo.STANDARD)


def participant_permission(claims: api.access_token.Claims) -> proto_models.ParticipantPermission:
    v = claims.video or api.VideoGrants()
    sources = [_SOURCES[s] for s in (v.can_publish_sources or []) if s in _SOURCES]
    return proto_models.ParticipantPermission(
        can_subscribe=v.can_subscribe if v.can_subscribe is not None else True,
        can_publish=v.can_publish if v.can_publish is not None else True,
        can_publish_data=v.can_publish_data if v.can_publish_data is not None else True,
        can_publish_sources=sources,
        hidden=bool(v.hidden),
        recorder=bool(v.recorder),
        can_update_metadata=bool(v.can_update_own_metadata),
        agent=bool(v.agent),
        can_subscribe_metrics=bool(v.can_subscribe_metrics),
        can_manage_agent_session=bool(v.can_manage_agent_session),
    )


def check_join(claims: api.access_token.Claims) -> tuple[str, str]:
    """-> (room name, identity) or AuthError like livekit-server's ValidateConnectRequest."""
    v = claims.video
    if v is None or not v.room_join:
        raise AuthError(401, PERMISSION_DENIED)
    if not claims.identity:
        raise AuthError(400, "identity cannot be empty")
    if not v.room:
        raise AuthError(400, "no room name")
    return v.room, claims.identity


def mint_agent_token(
    api_key: str,
    api_secret: str,
    *,
    room: str,
    identity: str,
    name: str,
    metadata: str,
    attributes: dict[str, str],
    permission: proto_models.ParticipantPermission | None,
) -> str:
    """The job token handed to an agent worker (as protocol's BuildAgentToken)."""
    perm = permission or proto_models.ParticipantPermission(
        can_publish=True, can_subscribe=True, can_publish_data=True, can_update_metadata=True
    )
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=perm.can_publish,
        can_subscribe=perm.can_subscribe,
        can_publish_data=perm.can_publish_data,
        can_update_own_metadata=perm.can_update_metadata,
        hidden=perm.hidden or None,
        agent=True,
    )
    if perm.can_publish_sources:
        rev = {v: k for k, v in _SOURCES.items()}
        grants.can_publish_sources = [rev[s] for s in perm.can_publish_sources if s in rev]
    tok = (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_grants(grants)
        .with_ttl(datetime.timedelta(hours=6))
    )
    if name:
        tok = tok.with_name(name)
    if metadata:
        tok = tok.with_metadata(metadata)
    if attributes:
        tok = tok.with_attributes(dict(attributes))
    return tok.to_jwt()
