"""A LiveKit-compatible local server (development and test infrastructure).

The real, unmodified SDKs (livekit rtc, livekit-agents, livekit-api, and
livekit-client in a browser) connect to it; see server.py for the in-process
handle and rooms.py for the RoomManager API.
"""

from .config import ServerConfig, load_config
from .rooms import Participant, PublishedTrack, Room, RoomManager
from .server import LocalLiveKitServer

__all__ = [
    "LocalLiveKitServer",
    "load_config",
    "ServerConfig",
    "RoomManager",
    "Room",
    "Participant",
    "PublishedTrack",
]
