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


async def test_the_job_context_still_holds_the_dispatch_timeline_the_latency_trace_reads():
    # agents/observability/latency_trace.py reads the framework's RunningJobInfo through
    # JobContext's private `_info` (dispatch_timeline, the one place): a real JobContext here
    from livekit import rtc
    from livekit.agents.job import (
        JobAcceptArguments, JobContext, JobExecutorType, JobProcess, RunningJobInfo,
    )
    from livekit.protocol import agent, models

    from agents.observability.latency_trace import dispatch_timeline

    info = RunningJobInfo(
        accept_arguments=JobAcceptArguments(name="agent", identity="agent-1", metadata=""),
        job=agent.Job(id="AJ_1", room=models.Room(name="r")), url="ws://127.0.0.1:1", token="t",
        worker_id="W_1", fake_job=False,
        received_at=100.0, accepted_at=100.5, assigned_at=101.0, launched_at=101.25)
    proc = JobProcess(executor_type=JobExecutorType.PROCESS, user_arguments=None, http_proxy=None)
    ctx = JobContext(proc=proc, info=info, room=rtc.Room(), on_connect=lambda: None,
                     on_shutdown=lambda reason: None, inference_executor=None)
    assert dispatch_timeline(ctx) == {"job_received": 100.0, "job_accepted": 100.5,
                                      "job_assigned": 101.0, "job_launched": 101.25}
