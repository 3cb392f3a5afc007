"""The phone-call mark and per-rule phone settings in an agent dispatch's metadata
(agents/telephony/dispatch.py): what provisioning writes and what a job reads."""

from __future__ import annotations

import json
import logging

from agents.settings import PhoneSettings
from agents.telephony.dispatch import is_phone_dispatch, mark_phone, phone_settings


def test_the_mark_is_merged_into_the_rules_own_metadata():
    assert json.loads(mark_phone("")) == {"call": "phone"}
    merged = mark_phone('{"team": "sales", "phone": {"max_call_duration_s": 60}}')
    assert json.loads(merged) == {"team": "sales", "phone": {"max_call_duration_s": 60}, "call": "phone"}
    assert mark_phone(merged) == merged  # provisioning twice writes the same text
    assert mark_phone("plain words") == "plain words"  # not JSON: left alone (one reconnect then)
    assert is_phone_dispatch(merged) and not is_phone_dispatch("") and not is_phone_dispatch("plain words")
    assert not is_phone_dispatch('{"call": "browser"}')


def test_a_rules_phone_settings_override_the_workers_and_bad_ones_are_named(caplog):
    base = PhoneSettings(max_call_duration_s=1800, silence_timeout_s=60)
    got = phone_settings(base, mark_phone('{"phone": {"silence_timeout_s": 3}}'))
    assert got.silence_timeout_s == 3 and got.max_call_duration_s == 1800
    with caplog.at_level(logging.ERROR, logger="gemini-agent"):
        assert phone_settings(base, '{"phone": {"silence_timeout_s": -1}}') == base
        assert phone_settings(base, '{"phone": {"max_call_minutes": 3}}') == base
        assert phone_settings(base, '{"phone": 5}') == base
    errors = [r.getMessage() for r in caplog.records]
    assert "silence_timeout_s" in errors[0] and "greater than or equal to 0" in errors[0]
    assert "max_call_minutes" in errors[1] and "Extra inputs are not permitted" in errors[1]
    assert "'phone' must be an object" in errors[2]
