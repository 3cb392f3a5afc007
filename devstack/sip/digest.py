"""SIP digest authentication of inbound INVITEs (RFC 2617 / 8760, MD5, no qop), as
livekit-sip does it for a trunk with auth_username and auth_password: an INVITE without
Proxy-Authorization gets 407 with a challenge (realm "LiveKit", a nonce per Call-ID); one
whose credentials do not parse, name another user, answer no challenge of ours or give the
wrong response gets 401."""

from __future__ import annotations

import hashlib
import re
import secrets

from .message import SipMessage

REALM = "LiveKit"  # livekit-sip's default realm: its user agent name

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def parse_credentials(value: str) -> dict[str, str] | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(rest)}
    return params if {"username", "nonce", "uri", "response"} <= params.keys() else None


class InviteAuth:
    KEEP = 1000  # challenges awaiting an answer (the oldest go first: a scanner cannot grow it)

    def __init__(self) -> None:
        self._nonces: dict[str, str] = {}  # Call-ID -> the nonce we challenged it with

    def check(self, msg: SipMessage, username: str, password: str) -> tuple[int, str, list] | None:
        """None when the INVITE may go on; else the response to send (status, reason, headers)."""
        header = msg.get("Proxy-Authorization")
        if not header:
            nonce = self._nonces[msg.call_id] = secrets.token_hex(16)
            while len(self._nonces) > self.KEEP:
                del self._nonces[next(iter(self._nonces))]
            return 407, "Unauthorized", [("Proxy-Authenticate", f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5')]
        cred = parse_credentials(header)
        if cred is None:
            return 401, "Bad credentials", []
        if cred["username"] != username:
            return 401, "Unauthorized", []
        nonce = self._nonces.get(msg.call_id)
        if nonce is None or cred["nonce"] != nonce:
            return 401, "Bad credentials", []
        ha1 = _md5(f"{username}:{REALM}:{password}")
        ha2 = _md5(f"{msg.method}:{cred['uri']}")
        if cred.get("qop"):
            expected = _md5(f"{ha1}:{nonce}:{cred.get('nc', '')}:{cred.get('cnonce', '')}:{cred['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        if cred["response"] != expected:
            return 401, "Unauthorized", []
        del self._nonces[msg.call_id]
        return None
