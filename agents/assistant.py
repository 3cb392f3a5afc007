"""The agent itself: its instructions, its tools and how it opens the conversation."""

from __future__ import annotations

from livekit.agents import Agent

from .settings import Settings
from .tools import end_call_tool, get_current_time


class Assistant(Agent):
    def __init__(self, settings: Settings, *, hang_up_room: bool = False) -> None:
        super().__init__(
            instructions=settings.instructions(),
            tools=[get_current_time, end_call_tool(hang_up_room=hang_up_room)],
        )
        self._settings = settings

    async def on_enter(self) -> None:
        if self._settings.agent.greet:
            self.session.generate_reply(instructions=self._settings.agent.greeting_instructions)
