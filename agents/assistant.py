"""The agent itself: its instructions, its tools and how it opens the conversation."""

from __future__ import annotations

from livekit.agents import Agent

from .settings import Settings
from .tools import end_call_tool, get_current_time


class Assistant(Agent):
    def __init__(
        self, settings: Settings, *, hang_up_room: bool = False, instructions: str | None = None,
        extra_tools: list | None = None,  # e.g. a phone call's (agents/phone.py)
    ) -> None:
        super().__init__(
            # the text read once per job process (prewarm), or read now
            instructions=instructions if instructions is not None else settings.instructions(),
            tools=[get_current_time, end_call_tool(hang_up_room=hang_up_room), *(extra_tools or [])],
        )
        self._settings = settings

    async def on_enter(self) -> None:
        if self._settings.agent.greet:
            self.session.generate_reply(instructions=self._settings.agent.greeting_instructions)
