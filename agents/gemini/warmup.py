"""google-genai's first-use costs, paid once per worker instead of inside a call.

Reaches into google-genai's private converters (the only way to complete its pydantic
classes without a connection); if they change shape this warms less, it never fails the
process (agents/session.py catches and logs)."""

from __future__ import annotations

import ssl

from google.genai import Client as GenAIClient
from google.genai import types
from livekit.agents import llm
from livekit.plugins.google.realtime import realtime_api

from .model import GeminiRealtimeModel
from .transport import http_options


def warm_up_client(ssl_context: ssl.SSLContext, *, connect_timeout_s: float) -> GenAIClient:
    """Build one google-genai client (and drop it): its first construction imports the
    HTTP transport stack (~150 ms), which would otherwise land on the first call's path."""
    return GenAIClient(api_key="prewarm", http_options=http_options(ssl_context, connect_timeout_s=connect_timeout_s))


def warm_up_types(model: GeminiRealtimeModel, tools: list[llm.Tool], client: GenAIClient) -> None:
    """pydantic completes google-genai's model classes on their first use: ~100-250 ms of
    CPU inside the first Live connect (the setup config) and at the first messages each
    way. Build each kind once, with no connection, so a call finds them ready."""
    from google.genai import _live_converters as conv
    from google.genai import _transformers as t

    sess = realtime_api.RealtimeSession.__new__(realtime_api.RealtimeSession)
    sess._opts = model._opts
    sess._realtime_model = model
    sess._tools = llm.ToolContext(tools)
    sess._session_resumption_handle = None
    config = realtime_api.RealtimeSession._build_connect_config(sess)
    conv._LiveConnectParameters_to_mldev(
        api_client=client._api_client,
        from_object=types.LiveConnectParameters(
            model=t.t_model(client._api_client, model._opts.model), config=config
        ).model_dump(exclude_none=True),
    )
    # client -> server: the greeting request (client_content), microphone audio
    turns = [types.Content(parts=[types.Part(text="warm up")], role="user")]
    conv._LiveClientContent_to_mldev(
        from_object=t.t_client_content(turns, True).model_dump(mode="json", exclude_none=True)
    )
    conv._LiveSendRealtimeInputParameters_to_mldev(
        from_object=types.LiveSendRealtimeInputParameters.model_validate(
            {"audio": types.Blob(data=b"\0\0", mime_type="audio/pcm;rate=16000")}
        )
    )
    # server -> client: setupComplete, then a reply's audio, transcripts and bookkeeping
    for msg in (
        {"setupComplete": {}},
        {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
            "mimeType": "audio/pcm;rate=24000", "data": "AAA="}}]}}},
        {"serverContent": {"outputTranscription": {"text": "hi"}, "inputTranscription": {"text": "hi"}}},
        {"serverContent": {"generationComplete": True, "turnComplete": True, "interrupted": False}},
        {"sessionResumptionUpdate": {"newHandle": "h", "resumable": True}},
        {"usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 1, "totalTokenCount": 2}},
        {"toolCall": {"functionCalls": [{"id": "1", "name": "end_call", "args": {}}]}},
        {"goAway": {"timeLeft": "10s"}},
    ):
        types.LiveServerMessage._from_response(
            response=conv._LiveServerMessage_from_mldev(msg),
            kwargs=types.LiveServerMessage().model_dump(),
        )
