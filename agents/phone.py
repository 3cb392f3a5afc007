"""A phone call (a participant of kind SIP): what the agent does differently on the phone.

- its own greeting (phone.greeting_instructions), spoken once the line is up
  (`sip.callStatus` active: at once for a call in, when the callee answers a call out);
- the caller's number in its instructions (unless phone.share_caller_number is off, or
  the dispatch rule hides it);
- keypad digits reach the model as what the caller pressed; `collect_digits` gathers a
  number with the framework's GetDtmfTask; the framework's `send_dtmf_events` presses keys;
- `transfer_call`: a cold transfer (the framework's JobContext.transfer_sip_participant,
  i.e. SIP REFER) to a destination of the telephony file's allow-list, after a goodbye;
  anything else is refused to the model as a ToolError;
- hanging up: `end_call` deletes the room (BYE at the phone); the caller hanging up deletes
  it too; a maximum call duration and a silence timeout end the call after a short notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from livekit import rtc
from livekit.agents import AgentSession, JobContext, RunContext, ToolError, function_tool, get_job_context
from livekit.agents.beta.tools import send_dtmf_events
from livekit.agents.beta.workflows import GetDtmfTask

from .assistant import Assistant
from .settings import Settings
from .telephony.config import SipConfigError, TelephonyConfig, load_telephony, telephony_path
from .telephony.dispatch import is_phone_dispatch, phone_settings

logger = logging.getLogger("gemini-agent")

KEYPAD_PAUSE_S = 1.0  # digits pressed closer together than this reach the model as one message


def is_phone(participant: rtc.Participant | None) -> bool:
    return participant is not None and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


def early_agent(settings: Settings, instructions: str, job_metadata: str) -> "PhoneAssistant | None":
    """When the job's dispatch says it is a phone call (agents/telephony/dispatch.py): the
    phone agent as far as it is known before the caller is (its tools; its instructions
    without the caller's number), for the early Gemini connection's setup. The number then
    follows as the plugin's mid-session instruction update; the tools are the same."""
    if not is_phone_dispatch(job_metadata):
        return None
    return PhoneAssistant(settings, None, instructions=instructions, telephony=load_destinations(settings))


def load_destinations(settings: Settings) -> TelephonyConfig:
    try:
        return load_telephony(telephony_path(settings))
    except SipConfigError as e:  # the call goes on, without transfers
        logger.warning("telephony file unusable, no transfer destinations: %s", e)
        return TelephonyConfig()


def phone_instructions(settings: Settings, participant: rtc.RemoteParticipant | None,
                       telephony: TelephonyConfig) -> str:
    number = participant.attributes.get("sip.phoneNumber", "") if participant is not None else ""
    lines = ["", "You are on a telephone call. Keep your answers short and easy to follow by ear."]
    if number and settings.phone.share_caller_number:
        lines.append(f"The caller's phone number is {number}.")
    lines.append("When the caller presses keys on the phone's keypad you are told which keys they pressed.")
    if telephony.transfer_destinations:
        names = ", ".join(repr(d.name) for d in telephony.transfer_destinations)
        lines.append(f"You can transfer the caller with transfer_call to one of: {names}. Nowhere else.")
    return "\n".join(lines)


class PhoneAssistant(Assistant):
    def __init__(self, settings: Settings, participant: rtc.RemoteParticipant | None, *, instructions: str,
                 telephony: TelephonyConfig, job_metadata: str = "") -> None:
        """`participant` None: an agent built only for its tool declarations (early_agent)."""
        super().__init__(settings, hang_up_room=True,
                         instructions=instructions + phone_instructions(settings, participant, telephony),
                         extra_tools=[send_dtmf_events])
        # the phone settings of this call: the worker's, with the dispatch rule's own
        self.phone_settings = phone_settings(settings.phone, job_metadata)
        self._caller = participant
        self._telephony = telephony
        self.collecting = False  # a GetDtmfTask has the keypad
        self._transfer: asyncio.Task | None = None

    async def on_enter(self) -> None:
        if not self._settings.agent.greet:
            return
        await wait_line_up(self._caller)
        logger.info("the line is up: greeting the caller")
        self.session.generate_reply(instructions=self.phone_settings.greeting_instructions)

    @function_tool
    async def collect_digits(self, context: RunContext, num_digits: int, what: str) -> str:
        """Ask the caller to type a number on their phone's keypad (an account or order
        number, a PIN) and return the digits they typed.

        Args:
            num_digits: How many digits to collect (1-32).
            what: What the number is, e.g. "your account number".
        """
        if not 1 <= num_digits <= 32:
            raise ToolError("num_digits must be between 1 and 32")
        self.collecting = True
        try:
            result = await GetDtmfTask(
                num_digits=num_digits, chat_ctx=self.chat_ctx.copy(exclude_function_call=True),
                extra_instructions=f"Ask the caller to type {what} ({num_digits} digits) on the keypad, "
                                   "then press the pound key.")
        finally:
            self.collecting = False
        digits = result.user_input
        # The task's own instructions and tools made the Gemini Live session reconnect, so
        # this call's output has no session left to go to: tell the model in a user turn.
        asyncio.get_running_loop().call_soon(lambda: self.session.generate_reply(
            user_input=f"(The caller typed {digits} on the keypad for {what}.)"))
        return f"The caller typed: {digits}"

    @function_tool
    async def transfer_call(self, context: RunContext, destination: str) -> str:
        """Transfer the caller to a person or department (the call with you then ends).
        Only the destinations named in your instructions are possible.

        Args:
            destination: The destination's name, e.g. "front desk".
        """
        dest = self._telephony.destination(destination)
        if dest is None:
            allowed = ", ".join(repr(d.name) for d in self._telephony.transfer_destinations) or "none"
            raise ToolError(f"cannot transfer to {destination!r}: it is not an allowed destination "
                            f"(allowed: {allowed}); the call goes on")
        if self._transfer is not None:
            raise ToolError("a transfer is already under way")
        logger.info("transferring the caller", extra={"destination": dest.name})
        self._transfer = asyncio.create_task(self._transfer_after_goodbye(context, dest.uri, dest.name))
        return f"Tell the caller in one short sentence that you are transferring them to {dest.name} now."

    async def _transfer_after_goodbye(self, context: RunContext, uri: str, name: str) -> None:
        await _after_next_speech(context.session)
        try:
            await get_job_context().transfer_sip_participant(self._caller, uri)
        except Exception as e:  # the caller is still on the line: say so
            logger.warning("transfer to %s failed: %s", name, e)
            self._transfer = None
            self.session.generate_reply(
                instructions=f"The transfer to {name} did not work. Tell the caller and ask how else you can help.")


async def _after_next_speech(session: AgentSession, timeout: float = 10.0) -> None:
    """Wait until the reply the model is about to give (a goodbye) has been played."""
    created: asyncio.Future = asyncio.get_running_loop().create_future()

    def on_created(ev) -> None:
        if not created.done():
            created.set_result(ev.speech_handle)

    session.on("speech_created", on_created)
    try:
        handle = await asyncio.wait_for(created, timeout)
        await asyncio.wait_for(handle.wait_for_playout(), 30)
    except asyncio.TimeoutError:
        logger.warning("no goodbye was spoken before hanging up")
    finally:
        session.off("speech_created", on_created)


async def wait_line_up(participant: rtc.RemoteParticipant, timeout: float = 90.0) -> None:
    """Until the call is answered (`sip.callStatus` active); a call in is active at once."""
    deadline = time.monotonic() + timeout
    while participant.attributes.get("sip.callStatus", "active") not in ("active", "hangup"):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def attach(ctx: JobContext, session: AgentSession, agent: PhoneAssistant, settings: Settings) -> None:
    """The call's keypad, limits and hang-up, beside the session."""
    caller = agent._caller
    limits = agent.phone_settings
    pressed: list[str] = []
    flush: list[asyncio.TimerHandle] = []
    last_activity = [time.monotonic()]
    loop = asyncio.get_running_loop()

    def send_keys() -> None:
        if pressed and not agent.collecting:
            keys = " ".join(pressed)
            session.generate_reply(user_input=f"(The caller pressed {keys} on the phone keypad.)")
        pressed.clear()

    def on_dtmf(ev: rtc.SipDTMF) -> None:
        if ev.participant is None or ev.participant.identity != caller.identity:
            return
        last_activity[0] = time.monotonic()
        if agent.collecting:
            return  # GetDtmfTask listens itself
        pressed.append(ev.digit)
        for h in flush:
            h.cancel()
        flush[:] = [loop.call_later(KEYPAD_PAUSE_S, send_keys)]

    def on_activity(ev) -> None:
        last_activity[0] = time.monotonic()

    ctx.room.on("sip_dtmf_received", on_dtmf)
    session.on("user_state_changed", on_activity)
    session.on("agent_state_changed", on_activity)

    async def end_with_notice(why: str) -> None:
        logger.info("ending the call: %s", why)
        with contextlib.suppress(Exception):
            handle = session.generate_reply(instructions=limits.limit_notice)
            await asyncio.wait_for(handle.wait_for_playout(), 20)
        await ctx.delete_room()

    async def watch() -> None:
        started = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if limits.max_call_duration_s and now - started >= limits.max_call_duration_s:
                return await end_with_notice("maximum call duration")
            idle = session.agent_state == "listening" and session.user_state != "speaking"
            if limits.silence_timeout_s and idle and now - last_activity[0] >= limits.silence_timeout_s:
                return await end_with_notice("silence timeout")

    watcher = asyncio.create_task(watch(), name="phone_call_limits")

    def on_left(p: rtc.RemoteParticipant) -> None:
        if p.identity == caller.identity:  # the caller hung up: the room goes too
            logger.info("the caller hung up")
            ctx.delete_room()

    ctx.room.on("participant_disconnected", on_left)

    async def stop() -> None:
        watcher.cancel()
        for h in flush:
            h.cancel()

    ctx.add_shutdown_callback(stop)
