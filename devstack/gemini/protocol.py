"""Client message parsing/normalisation and server message construction.

Clients mix casings (the SDK sends snake_case wrappers with camelCase or snake_case
nested keys) and base64 alphabets, so everything is normalised to snake_case and
bytes on the way in. On the way out, top-level keys must be camelCase: the SDK's
parser drops snake_case ones and then raises on an "empty" message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from .audio import OUTPUT_RATE

# Close codes the service uses.
CLOSE_INVALID = 1007  # invalid argument
CLOSE_POLICY = 1008  # e.g. model not found for this API
CLOSE_INTERNAL = 1011

WRAPPERS = ("setup", "client_content", "realtime_input", "tool_response", "context_update")
_REALTIME_KEYS = {"audio", "video", "media_chunks", "text", "activity_start", "activity_end", "audio_stream_end"}
_VIDEO_MIME = ("image/jpeg", "image/png", "image/webp")

# Values under these keys are user data (tool args/results, JSON schemas): keep as sent.
_OPAQUE_KEYS = {"args", "response", "parameters", "parameters_json_schema", "response_json_schema", "labels"}

_CAMEL_RE = re.compile(r"(?<=[a-z0-9])([A-Z])")


class ProtocolError(Exception):
    """A client error the service answers by closing the socket with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def snake(key: str) -> str:
    return _CAMEL_RE.sub(r"_\1", key).lower()


def normalise(obj: Any) -> Any:
    """Recursively convert keys to snake_case, leaving user data untouched."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            sk = snake(k) if isinstance(k, str) else k
            out[sk] = v if sk in _OPAQUE_KEYS else normalise(v)
        return out
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    return obj


def decode_b64(data: Any, where: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not."""
    if not isinstance(data, str):
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{where}' (TYPE_BYTES), expected base64 string")
    s = data.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            CLOSE_INVALID, f"Invalid value at '{where}' (TYPE_BYTES), Base64 decoding failed"
        ) from None


def encode_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Blob:
    mime_type: str
    data: bytes


def _blob(obj: Any, where: str) -> Blob:
    if not isinstance(obj, dict):
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{where}', expected a Blob object")
    mime = obj.get("mime_type") or ""
    return Blob(mime_type=str(mime), data=decode_b64(obj.get("data", ""), f"{where}.data"))


def _check_audio(blob: Blob, where: str) -> None:
    if not blob.mime_type.lower().startswith("audio/pcm"):
        raise ProtocolError(
            CLOSE_INVALID,
            f"Unsupported mime type '{blob.mime_type}' at '{where}': audio must be audio/pcm",
        )


def _check_video(blob: Blob, where: str) -> None:
    if blob.mime_type.lower() not in _VIDEO_MIME:
        raise ProtocolError(
            CLOSE_INVALID,
            f"Unsupported mime type '{blob.mime_type}' at '{where}': video must be image/jpeg",
        )


def parse_client_message(raw: str | bytes) -> tuple[str, dict]:
    """Return (wrapper, normalised body); blobs come back as `Blob` objects."""
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ProtocolError(CLOSE_INVALID, "Invalid JSON payload received.") from None
    if not isinstance(msg, dict) or len(msg) != 1:
        keys = list(msg) if isinstance(msg, dict) else type(msg).__name__
        raise ProtocolError(CLOSE_INVALID, f"Invalid JSON payload received. Expected exactly one of {WRAPPERS}, got {keys}")
    (key, body), = msg.items()
    wrapper = snake(key)
    if wrapper not in WRAPPERS:
        raise ProtocolError(CLOSE_INVALID, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    if not isinstance(body, dict):
        raise ProtocolError(CLOSE_INVALID, f"Invalid value at '{key}', expected an object")
    body = normalise(body)
    if wrapper == "realtime_input":
        body = _parse_realtime_input(body)
    elif wrapper == "client_content":
        for i, turn in enumerate(body.get("turns") or []):
            for j, part in enumerate((turn or {}).get("parts") or []):
                if isinstance(part, dict) and "inline_data" in part:
                    part["inline_data"] = _blob(part["inline_data"], f"client_content.turns[{i}].parts[{j}].inline_data")
    return wrapper, body


def _parse_realtime_input(body: dict) -> dict:
    unknown = set(body) - _REALTIME_KEYS
    if unknown:
        raise ProtocolError(CLOSE_INVALID, f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}" at \'realtime_input\'')
    if "audio" in body:
        body["audio"] = _blob(body["audio"], "realtime_input.audio")
        _check_audio(body["audio"], "realtime_input.audio")
    if "video" in body:
        body["video"] = _blob(body["video"], "realtime_input.video")
        _check_video(body["video"], "realtime_input.video")
    if "media_chunks" in body:
        chunks = []
        for i, c in enumerate(body["media_chunks"] or []):
            blob = _blob(c, f"realtime_input.media_chunks[{i}]")
            if blob.mime_type.lower().startswith("audio/"):
                _check_audio(blob, f"realtime_input.media_chunks[{i}]")
            else:
                _check_video(blob, f"realtime_input.media_chunks[{i}]")
            chunks.append(blob)
        body["media_chunks"] = chunks
    if "text" in body and not isinstance(body["text"], str):
        raise ProtocolError(CLOSE_INVALID, "Invalid value at 'realtime_input.text' (TYPE_STRING)")
    return body


def content_text(content: dict | None) -> str:
    """Concatenated text parts of a Content."""
    if not content:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content.get("parts") or [] if isinstance(p, dict))


# ---- server -> client -----------------------------------------------------------

def setup_complete(session_id: str | None = None) -> dict:
    return {"setupComplete": {"sessionId": session_id} if session_id else {}}


def server_content(**fields: Any) -> dict:
    """serverContent with camelCase field names (pass python names)."""
    return {"serverContent": {_camel(k): v for k, v in fields.items() if v is not None}}


def audio_part(pcm: bytes, rate: int = OUTPUT_RATE) -> dict:
    return {"inlineData": {"mimeType": f"audio/pcm;rate={rate}", "data": encode_b64(pcm)}}


def text_part(text: str) -> dict:
    return {"text": text}


def tool_call(calls: list[dict]) -> dict:
    return {"toolCall": {"functionCalls": calls}}


def tool_call_cancellation(ids: list[str]) -> dict:
    return {"toolCallCancellation": {"ids": ids}}


def go_away(time_left: str) -> dict:
    return {"goAway": {"timeLeft": time_left}}


def session_resumption_update(handle: str | None, resumable: bool = True,
                              last_consumed_index: int | None = None) -> dict:
    """A handle (resumable) or `resumable: false` with no handle (mid-reply, mid-tool-call).

    lastConsumedClientMessageIndex is an int64, which proto3 JSON writes as a string."""
    body: dict[str, Any] = {"newHandle": handle} if resumable and handle else {}
    body["resumable"] = bool(resumable and handle)
    if last_consumed_index is not None:
        body["lastConsumedClientMessageIndex"] = str(last_consumed_index)
    return {"sessionResumptionUpdate": body}


def usage_metadata(prompt: dict[str, int], response: dict[str, int]) -> dict:
    """Token counts per modality ("AUDIO", "TEXT", "IMAGE")."""
    p, r = sum(prompt.values()), sum(response.values())
    return {
        "usageMetadata": {
            "promptTokenCount": p,
            "responseTokenCount": r,
            "totalTokenCount": p + r,
            "promptTokensDetails": [{"modality": m, "tokenCount": n} for m, n in prompt.items() if n],
            "responseTokensDetails": [{"modality": m, "tokenCount": n} for m, n in response.items() if n],
        }
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def parse_duration_s(value: str | float | int) -> float:
    """'10s' / '1.5s' / 10 -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(str(value).strip().rstrip("s") or 0)
