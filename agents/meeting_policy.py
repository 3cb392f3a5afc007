"""What the model is told in a meeting, and when it may speak (meeting.reply_policy).

`always`: the agent answers every turn (a one-to-one call). `addressed`: it speaks only
when called by its name or an alias, or asked a direct question. Gemini decides that
itself with proactive audio (`proactivity`, which lets the native-audio model decline
to answer a turn), guided by the roster and this policy in its instructions; the
product adds what it controls: it never forces a reply to a remark that does not name
the agent (typed chat goes into the context only), and it never makes the agent speak
about people joining or leaving unless greeting late joiners is configured.
"""

from __future__ import annotations

import logging
import re


from .settings import MeetingSettings

logger = logging.getLogger("gemini-agent")


def policy_for(settings: MeetingSettings, people: int) -> str:
    if settings.reply_policy != "auto":
        return settings.reply_policy
    return "addressed" if people > 1 else "always"


def names(settings: MeetingSettings) -> list[str]:
    return [settings.name, *settings.aliases]


def addresses_agent(settings: MeetingSettings, text: str) -> bool:
    """Does the text call the agent by one of its names (whole words, any case)?"""
    return any(
        re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text, re.IGNORECASE) for n in names(settings)
    )


def meeting_instructions(base: str, settings: MeetingSettings, roster: list[str], policy: str) -> str:
    """The product's instructions plus who is in the room and when to speak."""
    aka = f" (also called {', '.join(settings.aliases)})" if settings.aliases else ""
    lines = [
        base.rstrip(),
        "",
        f"You are {settings.name}{aka}, taking part in a meeting with several people: "
        + ", ".join(roster) + ".",
        "You hear one person at a time. Before each person speaks you get a note such as "
        "'[Alice is speaking]'; typed chat arrives as 'Alice (chat): ...'. Keep track of who "
        "said what and address people by name when you answer them, e.g. 'Alice, ...'.",
    ]
    if policy == "addressed":
        lines.append(
            f"Only speak when someone addresses you by name ({', '.join(names(settings))}) or "
            "asks you a question directly. When people talk among themselves, stay silent: "
            "do not answer, comment or acknowledge."
        )
    return "\n".join(lines)
