"""What went wrong with a Gemini Live connection, and whether trying again can help.

Transient (reconnect): the service's internal error (1011), an abnormal closure or reset
(1006, a dropped TCP connection), a normal close we did not ask for (1000/1001, e.g. at the
end of a connection's lifetime), overload (1013, HTTP 429/5xx on the upgrade), timeouts and
stalls.

Fatal (tell the caller, end the call): an invalid request (1007: a bad setup, or the
context exhausted — sending it again fails the same way), a policy refusal (1008: an
unknown model, a model the key may not use), and an upgrade refused for the credentials or
the address (HTTP 400/401/403/404).

A refusal while *resuming* may be about the handle alone (expired, unknown): that is tried
once more without the handle, as a new session given the conversation so far.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from google.genai import errors as genai_errors
from websockets.exceptions import ConnectionClosed, InvalidStatus

TRANSIENT_CLOSE_CODES = frozenset({1000, 1001, 1006, 1011, 1012, 1013, 1014})
FATAL_CLOSE_CODES = {
    1007: "Gemini refused the request as invalid (1007)",
    1008: "Gemini refused the session by policy (1008): unknown model, or not allowed for this key",
}
FATAL_HTTP_STATUS = {
    400: "Gemini refused the connection as a bad request (HTTP 400)",
    401: "Gemini refused the credentials (HTTP 401): check GOOGLE_API_KEY",
    403: "Gemini refused the credentials (HTTP 403): check GOOGLE_API_KEY and the model's access",
    404: "Gemini has no such endpoint or model (HTTP 404)",
}


class GeminiStalled(Exception):
    """The connection is open but the service stopped answering."""


@dataclass(frozen=True)
class Fault:
    cause: str  # short label for logs and metrics: "close_1011", "http_503", "stall", ...
    fatal: bool
    detail: str

    def __str__(self) -> str:
        return self.detail


def classify(error: BaseException) -> Fault:
    """`error` as the plugin or google-genai raised it (an APIConnectionError's cause)."""
    while error.__cause__ is not None and not _known(error):
        error = error.__cause__
    if isinstance(error, GeminiStalled):
        return Fault("stall", False, str(error))
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status in FATAL_HTTP_STATUS:
            return Fault(f"http_{status}", True, FATAL_HTTP_STATUS[status])
        return Fault(f"http_{status}", False, f"Gemini refused the connection (HTTP {status})")
    code = _close_code(error)
    if code is not None:
        if code in FATAL_CLOSE_CODES:
            return Fault(f"close_{code}", True, f"{FATAL_CLOSE_CODES[code]}: {_reason(error)}")
        return Fault(f"close_{code}", False, f"Gemini closed the connection ({code}): {_reason(error)}")
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return Fault("timeout", False, f"Gemini did not answer in time ({error or 'timeout'})")
    if isinstance(error, (ConnectionError, OSError)):
        return Fault("network", False, f"network error reaching Gemini: {error}")
    return Fault(type(error).__name__, False, f"{type(error).__name__}: {error}")


def _known(error: BaseException) -> bool:
    return isinstance(error, (GeminiStalled, InvalidStatus, genai_errors.APIError, ConnectionClosed,
                              asyncio.TimeoutError, TimeoutError, ConnectionError, OSError))


def _close_code(error: BaseException) -> int | None:
    if isinstance(error, genai_errors.APIError) and isinstance(error.code, int) and 1000 <= error.code < 5000:
        return error.code
    if isinstance(error, ConnectionClosed):
        return error.rcvd.code if error.rcvd else 1006
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, genai_errors.APIError):
        # a close frame's reason arrives as the error's details (a string)
        reason = error.message or (error.details if isinstance(error.details, str) else "") or error.status
        return str(reason or "").strip() or "no reason given"
    if isinstance(error, ConnectionClosed) and error.rcvd:
        return error.rcvd.reason or "no reason given"
    return str(error) or "no reason given"
