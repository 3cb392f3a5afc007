"""`python -m agents.web`: serve the web client and token endpoint alone (settings.web)."""

import asyncio
import logging
import sys

from ..settings import SettingsError, load_settings
from .server import run_web
from .token_service import ConfigError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        asyncio.run(run_web(settings, on_ready=lambda url: print(f"web client: {url}", flush=True)))
    except (SettingsError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the address is taken or cannot be bound
        print(f"error: cannot serve the web client on {settings.web.host}:{settings.web.port} ({e.strerror}); "
              "stop what uses it, or set web.port (AGENT_WEB__PORT)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
