"""The browser client and its token endpoint, served by one aiohttp app."""

from .server import STATIC_DIR, WebServer, create_app, run_web
from .token_service import ConfigError, LiveKitCredentials, TokenService

__all__ = [
    "STATIC_DIR",
    "ConfigError",
    "LiveKitCredentials",
    "TokenService",
    "WebServer",
    "create_app",
    "run_web",
]
