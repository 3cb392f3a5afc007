"""A call outlives its Gemini Live connection (agents/gemini/connection.py): the product's
own AgentSession against the offline Gemini server, which is made to fail the way the
service does — goAway, close 1011, refused upgrades, setups never answered, handles
refused. What the caller hears is measured: whole replies, every question answered."""

from __future__ import annotations

import asyncio


from .support.conversation import agent_has_played, assert_whole_echo, rt_session

RATE = 48000
QUESTION = "Please tell me about the weather tomorrow in Seoul and in Busan."


def turn_complete_at(session) -> list[float]:
    return [m.at for m in session.sent if m.content.get("turnComplete")]


async def test_go_away_mid_reply_lets_the_reply_finish_then_rotates(conversation, gemini, speech):
    conv = await conversation()
    question = speech(QUESTION, RATE)
    conv.mic.say(question)
    await agent_has_played(conv, 0.8)
    first = await gemini.wait_for_session(1)
    await first.send_go_away("6s")  # the server closes at the deadline

    [reply] = await conv.speaker.wait_for_segments(1)
    assert not reply.interrupted
    assert_whole_echo(reply, question, RATE)

    second = await gemini.wait_for_session(2)
    # rotated at the turn boundary, with the handle issued for it
    assert second.connected_at >= turn_complete_at(first)[0]
    assert second.resumed_from == first.handles[-1]
    assert first.close_code is None, "the server had to close the old connection itself"

    follow_up = speech("And what about the day after?", RATE)
    conv.mic.say(follow_up)
    [_, answer] = await conv.speaker.wait_for_segments(2)
    assert_whole_echo(answer, follow_up, RATE)
    assert second.conversation.turn_count == 2  # context kept: this was turn 2


async def test_close_1011_mid_reply_answers_the_question_again_in_full(conversation, gemini, speech):
    conv = await conversation()
    first_q = speech("First, a short question.", RATE)
    conv.mic.say(first_q)
    await conv.speaker.wait_for_segments(1)

    question = speech(QUESTION, RATE)
    conv.mic.say(question)
    await agent_has_played(conv, 0.8, segment=1)
    first = await gemini.wait_for_session(1)
    await first.close(1011, "Internal error encountered.")

    second = await gemini.wait_for_session(2)
    assert second.resumed_from == first.handles[-1]
    cut, answer = (await conv.speaker.wait_for_segments(3))[1:]
    assert cut.played_s < 2.5, "the first answer was not cut by the fault"
    assert_whole_echo(answer, question, RATE)

    follow_up = speech("Thanks. One more thing.", RATE)
    conv.mic.say(follow_up)
    assert_whole_echo((await conv.speaker.wait_for_segments(4))[3], follow_up, RATE)
    assert [f.cause for f in rt_session(conv).faults] == ["close_1011"]


async def test_refused_reconnects_after_1011_do_not_end_the_call(conversation, gemini, speech):
    refusals = 2
    conv = await conversation()
    await (await gemini.wait_for_session(1)).close(1011, "Internal error encountered.")
    gemini.script.refuse_connections(refusals, status=503)

    question = speech("Are you still there?", RATE)
    await asyncio.sleep(0.1)
    conv.mic.say(question)
    [answer] = await conv.speaker.wait_for_segments(1)
    assert_whole_echo(answer, question, RATE)
    assert [r.status for r in gemini.refused] == [503] * refusals
    assert [f.cause for f in rt_session(conv).faults] == ["close_1011"] + ["http_503"] * refusals


async def test_words_spoken_while_the_link_is_down_reach_the_model(conversation, gemini, speech):
    conv = await conversation()
    first = await gemini.wait_for_session(1)
    # refused four times: the link stays down for ~1.7 s of backoff, longer than the
    # start of the question
    gemini.script.refuse_connections(4, status=503)
    await first.close(1011, "Internal error encountered.")
    question = speech(QUESTION, RATE)
    conv.mic.say(question)
    [answer] = await conv.speaker.wait_for_segments(1)
    assert_whole_echo(answer, question, RATE)

    second = await gemini.wait_for_session(2)
    spoken_s = len(question) / RATE
    assert len(second.audio_in) / 2 / 16000 >= spoken_s, "caller audio was lost during the outage"


async def test_a_setup_never_answered_is_noticed_and_recovered(conversation, gemini, speech):
    conv = await conversation(connection__setup_timeout_s="1.5")
    first = await gemini.wait_for_session(1)
    gemini.script.stall_setups(1)  # the next connection's setup is never answered
    await first.close(1011, "Internal error encountered.")
    question = speech("Hello again.", RATE)
    conv.mic.say(question)
    [answer] = await conv.speaker.wait_for_segments(1)
    assert_whole_echo(answer, question, RATE)
    stalled = gemini.sessions[1]
    assert not any(m.kind == "setupComplete" for m in stalled.sent)
    assert [f.cause for f in rt_session(conv).faults] == ["close_1011", "stall"]


async def test_a_connection_that_stops_listening_between_turns_is_noticed_when_the_caller_speaks(
        conversation, gemini, speech):
    """An open, silent connection: the caller's next question meets no transcript and no
    reply; that is noticed `stall_timeout_s` after the caller stops, and the question is
    answered on a new connection."""
    gemini.script.fault(turn=1, during="after_turn", kind="stall")
    conv = await conversation(connection__stall_timeout_s="2")
    conv.mic.say(speech("First question.", RATE))
    await conv.speaker.wait_for_segments(1)
    question = speech(QUESTION, RATE)
    conv.mic.say(question)
    [_, answer] = await conv.speaker.wait_for_segments(2, timeout=30)
    assert_whole_echo(answer, question, RATE)
    assert [f.cause for f in rt_session(conv).faults] == ["stall"]


async def test_gemini_gone_for_good_fails_the_call_with_the_reason(conversation, gemini):
    conv = await conversation(connection__setup_timeout_s="0.5", connection__reconnect_within_s="2")
    first = await gemini.wait_for_session(1)
    gemini.script.stall_setup = True  # every setup from now on
    await first.close(1011, "Internal error encountered.")
    fault = await asyncio.wait_for(rt_session(conv).failure, 15)
    assert fault.fatal
    assert "connection.reconnect_within_s" in str(fault)


async def test_an_unknown_model_fails_at_once_with_the_services_reason(conversation, gemini):
    conv = await conversation(model__name="gemini-no-such-model")
    fault = await asyncio.wait_for(rt_session(conv).failure, 10)
    assert fault.cause == "close_1008"
    assert "gemini-no-such-model" in str(fault)
    assert len(gemini.sessions) == 1, "a fatal refusal was tried again"


async def test_a_refused_handle_starts_a_new_session_given_the_conversation(conversation, gemini, speech):
    conv = await conversation()
    first_q = speech("My name is Alice.", RATE)
    conv.mic.say(first_q)
    await conv.speaker.wait_for_segments(1)
    await conv.wait_message("user", "utterance 1")
    first = await gemini.wait_for_session(1)
    assert first.handles
    gemini.handle_ttl_s = 0.0  # the handles expire as the connection ends
    await first.close(1011, "Internal error encountered.")

    fresh = await gemini.wait_for_session(3)  # 2 refused the expired handle
    assert gemini.sessions[1].close_code == 1007 and gemini.sessions[1].resumed_from is None
    assert fresh.resumed_from is None
    # given the conversation so far as history (what the caller said, what the agent said)
    history = await fresh.wait_for(lambda m: m.kind != "audio" and "utterance 1" in str(m.body), timeout=5)
    assert history.body.get("turn_complete") is False

    question = speech("Do you remember me?", RATE)
    conv.mic.say(question)
    assert_whole_echo((await conv.speaker.wait_for_segments(2))[1], question, RATE)


async def test_a_dropped_connection_mid_reply_answers_the_question_again_in_full(conversation, gemini, speech):
    """No close frame at all (a reset; the client sees 1006)."""
    gemini.script.fault(turn=1, during="reply", kind="drop", after_s=0.8)
    conv = await conversation()
    question = speech(QUESTION, RATE)
    conv.mic.say(question)
    cut, answer = await conv.speaker.wait_for_segments(2)
    assert cut.played_s < 2.5
    assert_whole_echo(answer, question, RATE)
    assert [f.cause for f in rt_session(conv).faults] == ["close_1006"]


async def test_a_fault_during_a_tool_call_still_answers_the_question(conversation, gemini, speech):
    gemini.script.tool_call(1, "get_current_time", {"timezone": "Asia/Seoul"})
    gemini.script.fault(turn=1, during="tool_call", kind="close", code=1011)
    conv = await conversation()
    question = speech("What time is it in Seoul?", RATE)
    conv.mic.say(question)
    answer = (await conv.speaker.wait_for_segments(1))[0]
    assert not answer.interrupted and answer.played_s > 0.5
    # the question was heard again on the new connection, the tool ran for it, and the
    # model answered with its result
    assert [f.cause for f in rt_session(conv).faults] == ["close_1011"]
    assert any(o.name == "get_current_time" and not o.is_error for o in conv.tool_outputs)
    log = gemini.conversation(gemini.sessions[-1].conversation.id)
    assert [t.outcome for t in log.turns if t.n == 1][-1] == "completed"
    assert "Asia/Seoul" in [t.reply_text for t in log.turns if t.n == 1][-1]


async def test_a_long_call_rotates_many_times_without_a_cut_reply_or_a_lost_question(conversation, gemini, speech):
    """An hour of conversation compressed: every connection lives 4 s instead of ~10 min,
    and the service sends goAway 2 s before its end, as it does at the end of each."""
    gemini.connection_lifetime_s, gemini.go_away_lead_s = 4.0, 2.0
    conv = await conversation()
    turns = 7
    for n in range(turns):
        question = speech(f"Number {n + 1}.", RATE)
        conv.mic.say(question)
        reply = (await conv.speaker.wait_for_segments(n + 1, timeout=30))[n]
        assert not reply.interrupted
        assert_whole_echo(reply, question, RATE)
        await asyncio.sleep(0.5)

    rt = rt_session(conv)
    assert rt.rotations >= 6
    assert rt.faults == [], "a rotation turned into a fault"
    last = gemini.sessions[-1]
    assert last.resumed_from is not None
    assert last.conversation.turn_count == turns  # the whole conversation was kept
    assert all(s.close_code is None for s in gemini.sessions), "the server had to close a connection"
    # no reply was cut on the server's side either (a turn only half heard when a
    # connection was rotated is heard again on the next one)
    turns_log = gemini.conversation(last.conversation.id).turns
    assert not any(t.outcome == "cut" and t.reply_audio_s > 0 for t in turns_log)
    assert sorted(t.n for t in turns_log if t.outcome == "completed") == list(range(1, turns + 1))
