"""Function tools the model can call. Gemini sends a `toolCall`, the framework runs the
tool and answers with a `toolResponse`; a ToolError's message goes back to the model as
the call's error, so the model can apologise or ask again instead of the session failing.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from livekit.agents import ToolError, function_tool
from livekit.agents.beta.tools import EndCallTool


@function_tool
async def get_current_time(timezone: str) -> dict[str, str]:
    """Tell the current date and time in a time zone.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris", "Asia/Seoul" or "UTC".
    """
    name = timezone.strip()
    if not name or name not in available_timezones() and name != "UTC":
        raise ToolError(
            f"unknown time zone {timezone!r}; use an IANA name such as Europe/Paris or Asia/Seoul"
        )
    try:
        now = datetime.now(ZoneInfo(name))
    except ZoneInfoNotFoundError:
        raise ToolError(f"time zone data for {name!r} is not installed") from None
    return {
        "timezone": name,
        "iso": now.isoformat(timespec="seconds"),
        "spoken": now.strftime("%A %d %B, %H:%M"),
    }


def end_call_tool(*, hang_up_room: bool) -> EndCallTool:
    """The framework's end-call tool. `hang_up_room` deletes the room, which hangs up a
    phone caller; in a meeting the agent only leaves, so the others can go on."""
    return EndCallTool(delete_room=hang_up_room, end_instructions="say a short goodbye")
