"""SIP messages (RFC 3261) as text: parsing what arrives over UDP, building what we send."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

# RFC 3261 §7.3.3 compact header names
COMPACT = {
    "v": "Via", "f": "From", "t": "To", "i": "Call-ID", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding",
    "r": "Refer-To", "b": "Referred-By", "o": "Event", "u": "Allow-Events",
}
_CANONICAL = {n.lower(): n for n in (*COMPACT.values(), "CSeq", "Max-Forwards", "Allow", "User-Agent",
                                     "Subscription-State", "Reason", "Record-Route", "Route")}
REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 400: "Bad Request",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 481: "Call/Transaction Does Not Exist",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 603: "Decline",
}
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY"


class SipParseError(ValueError):
    pass


def canonical(name: str) -> str:
    n = name.strip()
    return COMPACT.get(n.lower()) or _CANONICAL.get(n.lower()) or n


@dataclass
class SipMessage:
    method: str = ""          # requests
    uri: str = ""
    status: int = 0           # responses
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return bool(self.method)

    def get(self, name: str, default: str = "") -> str:
        name = canonical(name)
        return next((v for k, v in self.headers if k == name), default)

    def get_all(self, name: str) -> list[str]:
        name = canonical(name)
        return [v for k, v in self.headers if k == name]

    def set(self, name: str, value: str) -> None:
        name = canonical(name)
        self.headers = [(k, v) for k, v in self.headers if k != name] + [(name, value)]

    def add(self, name: str, value: str) -> None:
        self.headers.append((canonical(name), value))

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, method = self.get("CSeq").partition(" ")
        return int(num), method.strip()

    def encode(self) -> bytes:
        start = (f"{self.method} {self.uri} SIP/2.0" if self.method
                 else f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status, '')}")
        lines = [start] + [f"{k}: {v}" for k, v in self.headers if k != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse(data: bytes) -> SipMessage:
    """One SIP message from a UDP datagram; SipParseError when it is not one."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SipParseError(f"not UTF-8: {e}") from None
    lines = text.replace("\r\n", "\n").split("\n")
    msg = SipMessage()
    start = lines[0].strip()
    m = re.fullmatch(r"SIP/2\.0 (\d{3}) ?(.*)", start)
    if m:
        msg.status, msg.reason = int(m.group(1)), m.group(2)
    else:
        m = re.fullmatch(r"([A-Z]+) (\S+) SIP/2\.0", start)
        if not m:
            raise SipParseError(f"bad start line {start[:80]!r}")
        msg.method, msg.uri = m.group(1), m.group(2)
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and msg.headers:  # folded continuation
            k, v = msg.headers[-1]
            msg.headers[-1] = (k, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise SipParseError(f"bad header line {line[:80]!r}")
        name = canonical(name)
        if name == "Via" and "," in value:
            msg.headers.extend((name, v.strip()) for v in value.split(","))
        else:
            msg.headers.append((name, value.strip()))
    if not sep:
        body = b""
    length = msg.get("Content-Length")
    if length:
        if not length.isdigit():
            raise SipParseError(f"bad Content-Length {length!r}")
        body = body[: int(length)]
    msg.body = body
    return msg


def missing_mandatory(msg: SipMessage) -> list[str]:
    need = ["Via", "From", "To", "Call-ID", "CSeq"]
    out = [h for h in need if not msg.get(h)]
    if msg.get("CSeq") and not re.fullmatch(r"\d+ [A-Z]+", msg.get("CSeq")):
        out.append("CSeq")
    return out


# ---------------------------------------------------------------- addresses

def uri_of(header: str) -> str:
    """The URI inside a From/To/Contact/Refer-To value: '"x" <sip:a@b>;tag=1' -> 'sip:a@b'."""
    m = re.search(r"<([^>]*)>", header)
    return (m.group(1) if m else header.split(";")[0]).strip()


def user_of(uri: str) -> str:
    m = re.match(r"(?:sips?|tel):([^@;>]*)", uri)
    return m.group(1) if m else ""


def hostport_of(uri: str, default_port: int = 5060) -> tuple[str, int]:
    m = re.match(r"sips?:(?:[^@]*@)?([^;:>?]+)(?::(\d+))?", uri)
    if not m:
        raise SipParseError(f"no host in {uri!r}")
    return m.group(1), int(m.group(2) or default_port)


def tag_of(header: str) -> str:
    m = re.search(r";\s*tag=([^;>\s]+)", header)
    return m.group(1) if m else ""


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def response(req: SipMessage, status: int, reason: str = "", *, to_tag: str = "",
             body: bytes = b"", content_type: str = "", extra: list[tuple[str, str]] = ()) -> SipMessage:
    """A response to `req`: Vias in order, From, To (with our tag), Call-ID, CSeq copied."""
    resp = SipMessage(status=status, reason=reason or REASONS.get(status, ""))
    for v in req.get_all("Via"):
        resp.add("Via", v)
    resp.add("From", req.get("From"))
    to = req.get("To")
    if to_tag and not tag_of(to) and status > 100:
        to += f";tag={to_tag}"
    resp.add("To", to)
    resp.add("Call-ID", req.call_id)
    resp.add("CSeq", req.get("CSeq"))
    for k, v in extra:
        resp.add(k, v)
    if body:
        resp.add("Content-Type", content_type or "application/sdp")
        resp.body = body
    return resp
