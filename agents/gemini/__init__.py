"""Gemini Live for the agent: the model from settings (build), one call's session
(realtime_session, on the data path), the life of its connection (connection, replay,
faults), how the socket is opened (transport) and the worker's warm-up (warmup)."""

from .build import build_realtime_model, connection_policy
from .model import GeminiRealtimeModel
from .realtime_session import GEMINI_INPUT_RATE, GeminiRealtimeSession

__all__ = ["GEMINI_INPUT_RATE", "GeminiRealtimeModel", "GeminiRealtimeSession", "build_realtime_model", "connection_policy"]
