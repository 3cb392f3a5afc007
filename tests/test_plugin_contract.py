"""The private members of livekit-plugins-google that agents/gemini/connection.py takes over
or reads. If the plugin renames or reshapes one, this fails before any call does."""

from __future__ import annotations

import inspect

from livekit.plugins.google.realtime import realtime_api

from agents.gemini.connection import HANDLED_PLUGIN_ERRORS, PLUGIN_MEMBERS_USED, ResilientSession


def test_every_plugin_member_the_connection_layer_uses_still_exists():
    session_cls = realtime_api.RealtimeSession
    source = inspect.getsource(session_cls)
    missing = [name for name in PLUGIN_MEMBERS_USED
               if not hasattr(session_cls, name) and f"self.{name}" not in source]
    assert missing == [], f"livekit-plugins-google changed: {missing} no longer exist"


def test_the_overridden_methods_keep_their_signatures():
    for name in ("_send_task", "_recv_task"):
        params = list(inspect.signature(getattr(realtime_api.RealtimeSession, name)).parameters)
        assert params == ["self", "session"], f"{name}{params}"
    params = inspect.signature(realtime_api.RealtimeSession._mark_restart_needed).parameters
    assert list(params) == ["self", "on_error"]
    params = inspect.signature(realtime_api.RealtimeSession._emit_error).parameters
    assert list(params) == ["self", "error", "recoverable"]
    # the main loop gives up with an exception whose cause is the real error, when told
    # to retry nothing (the policy in connection.py then decides)
    main = inspect.getsource(realtime_api.RealtimeSession._main_task)
    assert "max_retries == 0" in main and "raise APIConnectionError" in main
    assert issubclass(ResilientSession, realtime_api.RealtimeSession)


def test_google_genai_takes_the_websocket_options_the_transport_sets():
    from google.genai import live

    params = inspect.signature(live.ws_connect).parameters
    for name in ("compression", "close_timeout"):
        assert name in params, f"websockets connect() no longer takes {name}"


def test_the_plugin_still_logs_lost_connections_the_way_the_filter_expects():
    source = inspect.getsource(realtime_api)
    for prefix in HANDLED_PLUGIN_ERRORS:
        if prefix == "Error in _main_task":  # livekit.agents.utils.log_exceptions' wording
            from livekit.agents.utils import log as lk_log

            assert 'f"Error in {fn.__name__}"' in inspect.getsource(lk_log)
            continue
        probe = prefix.replace("error in task gemini-realtime", "error in task {task.get_name()}")
        assert probe in source, f"the plugin no longer logs {prefix!r}"
