"""Offline Gemini Live server (development and test infrastructure, not product code).

Speaks the Gemini Live wire protocol over TLS so the real google-genai client and the
livekit google plugin connect to it unmodified, via GOOGLE_GEMINI_BASE_URL and
SSL_CERT_FILE. See server.OfflineGeminiServer and script.Script.
"""

from .faults import Fault, FaultEvent, RandomFaults
from .protocol import ProtocolError
from .records import ConversationLog, TurnRecord
from .script import Script, ToolCallSpec, TurnPlan
from .server import DEFAULT_API_KEY, OfflineGeminiServer, Refusal
from .session import Conversation, LiveSession, ReceivedMessage, SentMessage, SessionClosed, VideoFrame

__all__ = [
    "DEFAULT_API_KEY", "Conversation", "ConversationLog", "Fault", "FaultEvent", "LiveSession", "RandomFaults", "TurnRecord", "OfflineGeminiServer", "ProtocolError", "ReceivedMessage",
    "Refusal", "Script", "SentMessage", "SessionClosed", "ToolCallSpec", "TurnPlan", "VideoFrame",
]
