"""What a phone call's agent dispatch says about the call, in its metadata (a JSON object).

`agent.py sip provision` puts `"call": "phone"` into the metadata of every agent a dispatch
rule dispatches, and `agent.py dial` into its own dispatch; LiveKit hands that metadata to
the job (`JobContext.job.metadata`) before anyone is in the room. The job then knows it is
a phone call from its start, so its early Gemini Live connection (agents/session.py) is set
up with the phone agent's tools rather than reconnecting once the caller is found.

The same object may carry `"phone": {...}`: settings of the `phone:` section for the calls
of that rule only (e.g. a shorter `max_call_duration_s` for one number).
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError

from ..settings import PhoneSettings

logger = logging.getLogger("gemini-agent")

MARK = {"call": "phone"}


def _object(metadata: str) -> dict | None:
    if not metadata.strip():
        return {}
    try:
        obj = json.loads(metadata)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def mark_phone(metadata: str) -> str:
    """The dispatch metadata with the phone-call mark added (an operator's metadata that is
    not a JSON object is left as it is: those calls reconnect once, as before)."""
    obj = _object(metadata)
    if obj is None:
        return metadata
    return json.dumps({**obj, **MARK}, sort_keys=True, separators=(",", ":"))


def is_phone_dispatch(metadata: str) -> bool:
    obj = _object(metadata or "")
    return bool(obj) and obj.get("call") == MARK["call"]


def phone_settings(base: PhoneSettings, metadata: str) -> PhoneSettings:
    """`base` with the dispatch's own `phone` settings; invalid ones are logged and ignored."""
    obj = _object(metadata or "") or {}
    overrides = obj.get("phone")
    if not overrides:
        return base
    if not isinstance(overrides, dict):
        logger.error("dispatch metadata: 'phone' must be an object of phone settings, got %r; ignored", overrides)
        return base
    try:
        return PhoneSettings.model_validate({**base.model_dump(), **overrides})
    except ValidationError as e:
        logger.error("dispatch metadata: invalid phone settings %s (%s); the worker's are used", overrides,
                     "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors()))
        return base
