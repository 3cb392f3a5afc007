"""The agent in a meeting: several people in one room with it.

Design (see ../shared notes, "meeting facts"): a hybrid of "mix everyone" and "follow
the speaker". Gemini Live takes one audio stream per session and cannot separate voices,
so mixing people who talk at once would give it one garbled turn that cannot be
attributed, while following a server-reported speaker loses the first ~0.5 s of every new
speaker (and the local LiveKit server reports none). Instead the agent reads every
person's microphone itself and hands the floor to one person at a time
(agents/meeting_floor.py): the first to speak goes to the model live, with a pre-roll so
no first word is lost; someone who speaks over them is queued with everything they said
and heard right after the agent has answered. Every model turn therefore belongs to one
known person, which is what makes "Alice, ..." answers and attributed transcripts right.

One person in the room: nothing of this runs; the framework's RoomIO path (linked
participant, its transcripts and chat) is today's one-to-one call, unchanged. The
machinery switches on when a second person is present and off again when one is left.

In a meeting the agent:
- tells the model the roster and the reply policy in its instructions, a note
  "[Alice is speaking]" whenever the floor changes hands, and "[Carol joined the
  meeting]" / "[Carol left the meeting]"; typed chat arrives as "Alice (chat): ...";
- publishes each person's words on `lk.transcription` under their identity and their
  microphone track (`lk.transcribed_track_id`); the agent's own stay RoomIO's;
- reads `lk.chat` from everyone and posts its answers to chat back on `lk.chat`;
- answers per `meeting.reply_policy` (agents/meeting_policy.py);
- sends the model whoever shares their screen, else the current speaker's camera;
- ends the conversation when the last person leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from livekit import rtc
from livekit.agents import AgentSession, llm

from . import meeting_policy as policy
from .meeting_floor import FloorAudioInput, Segment
from .participants import display_name, follow_participants, is_person, people
from .settings import Settings
from .video import SpeechActivity, VideoSource

logger = logging.getLogger("gemini-agent")

TOPIC_CHAT = "lk.chat"
TOPIC_TRANSCRIPTION = "lk.transcription"
SEGMENT_STALE_S = 60.0  # a floor turn the model never answered is not waited for forever


@dataclass
class _Attribution:
    item_id: str | None
    segment: Segment
    segment_id: str


def attach(session: AgentSession, room: rtc.Room, settings: Settings, instructions: str,
           video: VideoSource | None = None) -> None:
    """Follow the room's people for this conversation (called once the session started);
    `video` (agents/video.py, when video is on) is told who the speaker is."""
    if not settings.meeting.enabled or settings.turn_detection.mode == "manual":
        # push-to-talk: whoever presses the button is heard (agents/push_to_talk.py)
        follow_participants(session, room)
        return
    Meeting(session, room, settings, instructions, video).start()


class Meeting:
    def __init__(self, session: AgentSession, room: rtc.Room, settings: Settings, instructions: str,
                 video: VideoSource | None = None) -> None:
        self.session, self.room, self.settings = session, room, settings
        self.video = video
        self.cfg = settings.meeting
        self.base_instructions = instructions
        self.floor: FloorAudioInput | None = None
        self.policy = "always"
        self._agent_state = "initializing"
        self._spoke_since_turn = False
        self._segments: list[Segment] = []
        self._current: _Attribution | None = None
        self._last_noted: str | None = None
        self._last_segment: Segment | None = None
        self._chat_registered = False
        self._tasks: set[asyncio.Task] = set()
        self._publish_lock = asyncio.Lock()
        self._closing = False
        self._seq = 0
        self._pending_notes: list[str] = []
        self._model_lock = asyncio.Lock()
        self._context_lock = asyncio.Lock()

    # ---- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        r = self.room
        r.on("participant_connected", self._on_joined)
        r.on("participant_disconnected", self._on_left)
        r.on("track_subscribed", self._on_track_subscribed)
        r.on("track_unsubscribed", self._on_track_unsubscribed)
        self.session.on("agent_state_changed", self._on_agent_state)
        self.session.on("user_input_transcribed", self._on_user_transcript)
        self._take_over_chat()
        present = people(r)
        if len(present) > 1:
            self._enter()
        else:
            self._apply_policy(len(present))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_meeting(self) -> bool:
        return self.floor is not None

    # ---- one person <-> several -----------------------------------------------------------
    def _enter(self) -> None:
        lat = self.settings.latency
        self.floor = FloorAudioInput(
            sample_rate=lat.input_sample_rate,
            frame_ms=lat.input_frame_ms,
            threshold_dbfs=self.cfg.speech_threshold_dbfs,
            preroll_ms=self.cfg.preroll_ms,
            # a little longer than Gemini's own end-of-turn silence, so its turn ends first
            end_silence_ms=self.settings.turn_detection.silence_duration_ms + 100,
            queue_wait_s=self.cfg.queue_wait_s,
            on_floor=self._on_floor,
        )
        room_io = self.session.room_io
        linked = room_io.linked_participant
        if linked is not None:  # the one-to-one caller's words still in flight are theirs
            self._last_segment = Segment(linked.identity, _mic_sid(linked) or "")
        for p in people(self.room):
            self._add_voice(p)
        self.session.input.audio = SpeechActivity(self.floor)  # who spoke last: video pace, turn metric
        # RoomIO stops reading the one person's microphone and publishing their transcripts
        room_io.unset_participant()
        logger.info("meeting: %d people, hearing everyone", len(people(self.room)))
        self._apply_policy(len(people(self.room)))
        self._follow_video()

    def _leave(self, remaining: rtc.RemoteParticipant) -> None:
        floor, self.floor = self.floor, None
        if floor is not None:
            self._spawn(floor.aclose())
        room_io = self.session.room_io
        self.session.input.audio = SpeechActivity(room_io.audio_input)
        room_io.set_participant(remaining.identity)
        self._segments.clear()
        self._current = None
        self._last_noted = None
        logger.info("meeting: one person left, one-to-one with %s", remaining.identity)
        self._apply_policy(1)
        self._follow_video()

    def _add_voice(self, p: rtc.RemoteParticipant) -> None:
        if self.floor is None:
            return
        for pub in p.track_publications.values():
            if pub.source == rtc.TrackSource.SOURCE_MICROPHONE and pub.track is not None:
                self.floor.add(p, pub.track, pub.sid)

    # ---- room events ------------------------------------------------------------------------
    def _on_joined(self, p: rtc.RemoteParticipant) -> None:
        if not is_person(self.room, p):
            return
        n = len(people(self.room))
        if n < 2:
            return  # the first person: RoomIO links them (one-to-one)
        if not self.in_meeting:
            self._enter()
        else:
            self._add_voice(p)
            self._apply_policy(n)
        self._note(f"[{display_name(p)} joined the meeting]")
        if self.cfg.greet_late_joiners:
            self.session.generate_reply(
                instructions=f"{display_name(p)} just joined the meeting: welcome them by name "
                "in one short sentence."
            )

    def _on_left(self, p: rtc.RemoteParticipant) -> None:
        if not is_person(self.room, p):
            return
        remaining = people(self.room)
        if not remaining:
            logger.info("meeting: the last person left, ending the conversation")
            if not self._closing:
                self._closing = True
                self._spawn(self.session.aclose())
            return
        if not self.in_meeting:
            linked = self.session.room_io.linked_participant
            if linked is None or linked.identity == p.identity:
                self.session.room_io.set_participant(remaining[0].identity)
                self._follow_video()
            return
        self.floor.remove(p.identity)
        self._note(f"[{display_name(p)} left the meeting]")
        if len(remaining) == 1:
            self._leave(remaining[0])
        else:
            self._update_instructions()
            self._follow_video()

    def _on_track_subscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if self.floor is not None and is_person(self.room, p) and pub.source == rtc.TrackSource.SOURCE_MICROPHONE:
            self.floor.add(p, track, pub.sid)

    def _on_track_unsubscribed(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
    ) -> None:
        if self.floor is not None and pub.source == rtc.TrackSource.SOURCE_MICROPHONE:
            self.floor.remove(p.identity)

    # ---- the floor -----------------------------------------------------------------------------
    def _on_floor(self, seg: Segment) -> None:
        self._segments.append(seg)
        self._last_segment = seg
        self._spoke_since_turn = False
        if seg.identity != self._last_noted:
            self._last_noted = seg.identity
            p = self.room.remote_participants.get(seg.identity)
            self._note(f"[{display_name(p) if p else seg.identity} is speaking]", now=True)
        self._follow_video()

    def _on_agent_state(self, ev) -> None:
        self._agent_state = ev.new_state
        if ev.new_state in ("thinking", "speaking"):
            self._spoke_since_turn = True
        elif ev.new_state == "listening":
            if self.floor is not None and self._spoke_since_turn:
                self._spoke_since_turn = False
                self.floor.release()
            self._flush_notes()

    # ---- who said what: transcripts ------------------------------------------------------------
    def _on_user_transcript(self, ev) -> None:
        if self.floor is None or not ev.transcript:
            return
        cur = self._current
        if cur is None or (ev.item_id and cur.item_id != ev.item_id):
            seg = self._next_segment()
            if seg is None:
                return
            self._seq += 1
            cur = self._current = _Attribution(ev.item_id, seg, f"SG_meeting_{seg.identity}_{self._seq}")
        self._spawn(self._publish_transcript(cur, ev.transcript, ev.is_final))
        if ev.is_final:
            self._current = None
            if self._agent_state == "listening":
                self.floor.release()  # a turn the model declined: the next person speaks

    def _next_segment(self) -> Segment | None:
        """The oldest floor turn without a transcript yet (the model answers in order)."""
        now = time.monotonic()
        while self._segments and now - (self._segments[0].ended_at or now) > SEGMENT_STALE_S:
            self._segments.pop(0)
        if self._segments:
            return self._segments.pop(0)
        return self._last_segment

    async def _publish_transcript(self, cur: _Attribution, text: str, final: bool) -> None:
        seg = cur.segment
        attrs = {
            "lk.transcription_final": "true" if final else "false",
            "lk.segment_id": cur.segment_id,
        }
        if seg.track_sid:
            attrs["lk.transcribed_track_id"] = seg.track_sid
        async with self._publish_lock:
            try:
                if not self.room.isconnected():
                    return
                writer = await self.room.local_participant.stream_text(
                    topic=TOPIC_TRANSCRIPTION, sender_identity=seg.identity, attributes=attrs
                )
                await writer.write(text)
                await writer.aclose()
            except Exception as e:
                logger.warning("meeting: publishing %s's transcript failed: %s", seg.identity, e)

    # ---- telling the model ------------------------------------------------------------------
    def _apply_policy(self, n: int) -> None:
        self.policy = policy.policy_for(self.cfg, n)
        self._sync_model()

    def _update_instructions(self) -> None:
        self._sync_model()

    def _sync_model(self) -> None:
        """Bring the model's instructions (roster, policy) and proactive audio up to date;
        one change at a time, never while a reconnect is under way (that would restart it)."""
        self._spawn(self._sync_model_now())

    async def _sync_model_now(self) -> None:
        async with self._model_lock:
            agent = self.session.current_agent
            rt = agent.realtime_llm_session  # agents/gemini GeminiRealtimeSession
            for _ in range(200):  # up to ~10 s for a reconnect to finish
                if rt.connected or self._closing:
                    break
                await asyncio.sleep(0.05)
            if self.in_meeting:
                roster = [display_name(p) for p in people(self.room)]
                text = policy.meeting_instructions(self.base_instructions, self.cfg, roster, self.policy)
            else:
                text = self.base_instructions
            proactive = self.settings.model.modality == "audio" and (
                self.policy == "addressed" or self.settings.model.proactive_audio
            )
            if proactive != rt.proactive:
                rt.reconnect_with(instructions=text, proactive=proactive)
            # after a reconnect the new setup already carries `text`: this only records it
            await agent.update_instructions(text)

    def _note(self, text: str, *, now: bool = False) -> None:
        """A line for the model's context (no reply asked). Content sent to Gemini interrupts
        a reply in progress, so notes wait while the agent speaks, unless the floor just
        changed hands (then a person is talking over the agent anyway)."""
        self._pending_notes.append(text)
        if now or self._agent_state != "speaking":
            self._flush_notes()

    def _flush_notes(self) -> None:
        notes, self._pending_notes = self._pending_notes, []
        if not notes:
            return
        self._spawn(self._add_to_context("\n".join(notes)))

    async def _add_to_context(self, text: str) -> None:
        async with self._context_lock:  # each update builds on the one before
            agent = self.session.current_agent
            ctx = agent.chat_ctx.copy()
            ctx.add_message(role="user", content=text)
            try:
                await agent.update_chat_ctx(ctx)
            except Exception as e:
                logger.warning("meeting: could not add %r to the model's context: %s", text, e)

    # ---- chat -----------------------------------------------------------------------------------
    def _take_over_chat(self) -> None:
        """Typed chat from everyone (RoomIO accepts only its linked participant's)."""
        try:
            self.room.unregister_text_stream_handler(TOPIC_CHAT)
        except ValueError:
            pass
        self.room.register_text_stream_handler(TOPIC_CHAT, self._on_chat)

    def _on_chat(self, reader: rtc.TextStreamReader, identity: str) -> None:
        self._spawn(self._handle_chat(reader, identity))

    async def _handle_chat(self, reader: rtc.TextStreamReader, identity: str) -> None:
        text = (await reader.read_all()).strip()
        p = self.room.remote_participants.get(identity)
        if not text or p is None or not is_person(self.room, p):
            return
        line = f"{display_name(p)} (chat): {text}" if self.in_meeting else text
        if self.policy == "addressed" and not policy.addresses_agent(self.cfg, text):
            await self._add_to_context(line)  # for the record; nobody asked the agent
            return
        self.session.interrupt()
        handle = self.session.generate_reply(user_input=line)
        await handle
        reply = " ".join(
            item.text_content or ""
            for item in handle.chat_items
            if isinstance(item, llm.ChatMessage) and item.role == "assistant"
        ).strip()
        if reply and self.room.isconnected():
            await self.room.local_participant.send_text(reply, topic=TOPIC_CHAT)

    # ---- video ----------------------------------------------------------------------------------
    def _follow_video(self) -> None:
        """Tell the video source who the speaker is: who holds the floor, else who held it
        last (agents/video.py's pick_video decides between screens and cameras)."""
        if self.video is None:
            return
        if self.floor is None:
            self.video.follow(None, meeting=False)
            return
        last = self._last_segment.identity if self._last_segment else None
        self.video.follow(self.floor.holder or last, meeting=True)


def _mic_sid(p: rtc.RemoteParticipant) -> str | None:
    return next(
        (pub.sid for pub in p.track_publications.values() if pub.source == rtc.TrackSource.SOURCE_MICROPHONE),
        None,
    )
