"""The product's AgentSession (its agent, settings, tools and Gemini model) against the
offline Gemini Live server, with a real-time microphone and speaker instead of a room."""

from __future__ import annotations

import numpy as np
import pytest

from .support.audio import rms
from .support.conversation import ask_and_hear_the_echo, talk_over_the_agent

QUESTION = "Hello there. Could you tell me what time it is in Seoul right now?"


async def test_spoken_question_gets_the_models_audio_back(conversation, gemini, speech):
    conv = await conversation()
    # the offline model echoes the utterance: what the user said must come back intact
    await ask_and_hear_the_echo(conv, speech(QUESTION, 48000), 48000)
    # and both sides' transcripts reach the conversation
    session = await gemini.wait_for_session(1)
    assert session.setup["model"].endswith("native-audio-preview-12-2025")
    await conv.wait_message("user", "utterance 1")
    await conv.wait_message("assistant", "utterance 1")


async def test_16khz_microphone_goes_to_the_model_in_input_chunks(
    conversation, gemini, speech, product_settings
):
    """RoomIO delivers 16 kHz mono on the product's audio path: GeminiRealtimeSession sends
    it on as is, in messages of latency.input_chunk_ms (not the plugin's resampler and
    50 ms chunks, which a 48 kHz microphone goes through)."""
    conv = await conversation(mic_rate=16000)
    await ask_and_hear_the_echo(conv, speech(QUESTION, 16000), 16000)

    session = await gemini.wait_for_session(1)
    audio = [m.body for m in session.received if m.kind == "audio"]
    # every message is one chunk of 16 kHz 16-bit mono (shipped: 20 ms = 640 bytes)
    chunk_ms = product_settings().latency.input_chunk_ms
    assert len(audio) > 100
    assert {a.mime_type for a in audio} == {"audio/pcm;rate=16000"}
    assert {len(a.data) for a in audio} == {16000 * chunk_ms // 1000 * 2}


async def test_user_speech_interrupts_the_agent(conversation, gemini, speech):
    tone = (np.sin(2 * np.pi * 330 * np.arange(24000 * 6) / 24000) * 12000).astype(np.int16)
    gemini.script.reply(1, text="a long answer", audio=tone.tobytes())
    conv = await conversation()
    conv.mic.say(speech("Tell me a long story.", 48000))

    await talk_over_the_agent(conv, speech("Stop, stop please.", 48000))

    [cut] = await conv.speaker.wait_for_segments(1)
    assert cut.interrupted
    assert cut.played_s < 4.0, "the agent kept talking over the user"
    session = await gemini.wait_for_session(1)
    assert any(m.content.get("interrupted") for m in session.sent)
    # the interrupting utterance is answered in turn (echoed back)
    [_, answer] = await conv.speaker.wait_for_segments(2)
    assert rms(answer.pcm()[0]) > 0.01


async def test_with_interruptions_off_the_agent_finishes_its_answer(conversation, gemini, speech):
    tone = (np.sin(2 * np.pi * 330 * np.arange(24000 * 3) / 24000) * 12000).astype(np.int16)
    gemini.script.reply(1, text="a long answer", audio=tone.tobytes())
    conv = await conversation(turn_detection__interruptions="false")
    conv.mic.say(speech("Tell me a long story.", 48000))

    await talk_over_the_agent(conv, speech("Stop, stop please.", 48000))

    # the whole answer plays over the caller's words (its last few frames may give way to
    # the next answer, which follows at once: that is a hand-over, not a barge-in)
    [whole] = await conv.speaker.wait_for_segments(1)
    assert whole.played_s >= 2.9
    session = await gemini.wait_for_session(1)
    assert not any(m.content.get("interrupted") for m in session.sent)


async def test_tool_error_is_reported_to_the_model_not_raised(conversation, gemini, speech):
    gemini.script.tool_call(1, "get_current_time", {"timezone": "Mars/Olympus_Mons"})
    gemini.script.tool_call(2, "get_current_time", {"timezone": "Asia/Seoul"})
    conv = await conversation()

    conv.mic.say(speech("What time is it on Mars?", 48000))
    said = await conv.wait_message("assistant", "get_current_time")
    assert "unknown time zone 'Mars/Olympus_Mons'" in said
    session = await gemini.wait_for_session(1)
    [response] = [m for m in session.received if m.kind == "tool_response"]
    [fn] = response.body["function_responses"]
    assert fn["name"] == "get_current_time" and "unknown time zone" in str(fn["response"])

    # the session survived the error: the next question's tool call succeeds
    await conv.speaker.wait_for_segments(1)
    conv.mic.say(speech("And in Seoul?", 48000))
    said = await conv.wait_message("assistant", "get_current_time returned")
    assert "Asia/Seoul" in said and "+09:00" in said
    assert [o.is_error for o in conv.tool_outputs] == [True, False]


async def test_text_modality_answers_in_text(conversation, gemini, speech):
    gemini.script.transcripts[1] = "what is the capital of France"
    gemini.script.reply(1, text="Paris is the capital of France.")
    conv = await conversation(model__modality="text")
    conv.mic.say(speech("What is the capital of France?", 48000))
    await conv.wait_message("assistant", "Paris is the capital of France.")
    # the model's transcript of the user's speech is the user's turn in the conversation
    assert await conv.wait_message("user", "what is") == "what is the capital of France"
    session = await gemini.wait_for_session(1)
    assert session.setup["generation_config"]["response_modalities"] == ["TEXT"]
    assert conv.speaker.segments == []


async def test_every_model_setting_reaches_gemini(conversation, gemini, speech, product_settings):
    """Each setting the product documents arrives in Gemini's `setup` as the service reads it."""
    await conversation(
        model__voice="Kore", model__language="ko-KR", model__temperature="0.4",
        model__affective_dialog="true", model__proactive_audio="true",
        model__thinking__enabled="true", model__thinking__budget_tokens="512",
        model__thinking__include_thoughts="true",
        model__input_transcription="false",
        model__context_compression__trigger_tokens="20000", model__context_compression__target_tokens="8000",
        model__session_resumption="false",
        turn_detection__start_sensitivity="low", turn_detection__end_sensitivity="low",
        turn_detection__prefix_padding_ms="120", turn_detection__silence_duration_ms="800",
        turn_detection__interruptions="false",
    )
    session = await gemini.wait_for_session(1)
    setup = session.setup
    gc = setup["generation_config"]
    assert gc["speech_config"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == "Kore"
    assert gc["speech_config"]["language_code"] == "ko-KR"
    assert gc["temperature"] == pytest.approx(0.4)
    assert gc["response_modalities"] == ["AUDIO"]
    assert gc["enable_affective_dialog"] is True
    assert gc["thinking_config"] == {"thinking_budget": 512, "include_thoughts": True}
    assert setup["proactivity"] == {"proactive_audio": True}
    # affective dialog and proactive audio are served by the v1alpha API
    assert session.api_version == "v1alpha"
    # transcription: the caller's side off, the agent's side on (the default)
    assert "input_audio_transcription" not in setup
    assert "output_audio_transcription" in setup
    compression = setup["context_window_compression"]
    assert int(compression["trigger_tokens"]) == 20000
    assert int(compression["sliding_window"]["target_tokens"]) == 8000
    # no resumption handles asked for: the service keeps no conversation state
    assert "session_resumption" not in setup
    ric = setup["realtime_input_config"]
    assert ric["automatic_activity_detection"] == {
        "disabled": False,
        "start_of_speech_sensitivity": "START_SENSITIVITY_LOW",
        "end_of_speech_sensitivity": "END_SENSITIVITY_LOW",
        "prefix_padding_ms": 120,
        "silence_duration_ms": 800,
    }
    assert ric["activity_handling"] == "NO_INTERRUPTION"
    # the instructions file and the agent's tools
    settings = product_settings()
    assert session.conversation.system_instruction == settings.instructions()
    declared = {f["name"] for t in setup["tools"] for f in t.get("function_declarations", [])}
    assert {"get_current_time", "end_call"} <= declared
