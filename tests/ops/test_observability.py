"""The worker's Prometheus metrics, log context and OpenTelemetry traces after real calls
through the local LiveKit server: the values match what happened in the calls."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from devstack.gemini import proactive
from devstack.stack import LocalStack

from ..e2e.conftest import HEADSET_AGENT_ENV
from ..support.caller import Caller, caller_token

pytestmark = pytest.mark.asyncio(loop_scope="module")


class OtlpReceiver:
    """An OTLP/HTTP trace collector on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list = []
        self.resources: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _traces(self, request: web.Request) -> web.Response:
        req = ExportTraceServiceRequest.FromString(await request.read())
        for rs in req.resource_spans:
            self.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1/traces"
        return self


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def otlp():
    receiver = await OtlpReceiver().start()
    yield receiver
    await receiver.runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=env) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack, otlp, tmp_path_factory):
    # load by calls, not by the CPU of this shared machine (a saturated CPU reads as full);
    # the benchmarks' latency trace on too (agents/observability/latency_trace.py)
    w = await stack.start_worker({**HEADSET_AGENT_ENV, "AGENT_WORKER__MAX_CALLS": "10",
                                  "AGENT_OBSERVABILITY__TRACING_OTLP_ENDPOINT": otlp.url,
                                  "AGENT_LATENCY__TRACE_FILE": str(tmp_path_factory.mktemp("trace") / "agent")})
    yield w
    await w.stop()


async def scrape(worker) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} from the worker's /metrics."""
    for _ in range(100):
        m = re.search(r"Prometheus metrics exposed at http://[^:]*:(\d+)/metrics", worker.log_tail(10**6))
        if m:
            break
        await asyncio.sleep(0.1)
    assert m, worker.log_tail()
    # the framework binds all interfaces; with port 0 its log names one socket's port, the
    # IPv4 or the IPv6 one
    async with aiohttp.ClientSession() as http:
        for host in ("127.0.0.1", "[::1]"):
            try:
                async with http.get(f"http://{host}:{m.group(1)}/metrics") as r:
                    assert r.status == 200
                    text = await r.text()
                    break
            except aiohttp.ClientConnectorError:
                continue
        else:
            raise AssertionError(f"nothing listens on port {m.group(1)}")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def join(stack, room: str, identity: str, kind: str | None = None) -> Caller:
    caller = Caller(identity)
    await caller.join(stack.livekit.url, caller_token(stack.livekit.api_key, stack.livekit.api_secret, room,
                                                      identity, agent_name="gemini-agent", kind=kind))
    return caller


async def test_metrics_logs_and_traces_after_real_calls(worker, stack, otlp, speech):
    stack.gemini.script.tool_call(1, "get_current_time", {"timezone": "Mars/Olympus"})  # a tool error
    callers: list[Caller] = []
    try:
        browser = await join(stack, "obs-browser", "alice")
        phone = await join(stack, "obs-phone", "bob", kind="sip")
        meeting = [await join(stack, "obs-meeting", "carol"), await join(stack, "obs-meeting", "dave")]
        callers = [browser, phone, *meeting]
        for c in callers:
            await c.wait_agent(timeout=60)
        await browser.wait_for(lambda: "listening" in [s for _, s in browser.agent_states], 30, "the agent to listen")
        browser.say(speech("What time is it on Mars?"))
        await browser.wait_reply(await browser.wait_spoken())
        await browser.wait_for(lambda: "listening" in [s for _, s in browser.agent_states][-1:], 30,
                               "the agent to listen again")
        # a turn in the meeting too, addressed to the agent (its proactive audio, which the
        # meeting switches on, answers only turns that name it: devstack/gemini/proactive.py)
        carol = meeting[0]
        await carol.wait_for(lambda: any(proactive.enabled(s) for s in stack.gemini.sessions), 30,
                             "the meeting's proactive Gemini session")
        stack.gemini.script.reset()
        stack.gemini.script.transcripts.update({n: "Gemini, what time is it?" for n in (1, 2, 3)})
        carol.say(speech("Gemini, what time is it?"))
        await carol.wait_reply(await carol.wait_spoken())
        await carol.wait_for(lambda: "listening" in [s for _, s in carol.agent_states][-1:], 30,
                             "the agent to listen again in the meeting")

        during = await scrape(worker)
        assert value(during, "gemini_agent_active_calls", kind="browser") == 1
        assert value(during, "gemini_agent_active_calls", kind="phone") == 1
        assert value(during, "gemini_agent_active_calls", kind="meeting") == 1
        assert value(during, "gemini_agent_calls_total", kind="phone") == 1
        # the framework's own worker metrics are on the same endpoint
        assert value(during, "lk_agents_active_job_count", nodename=os.uname().nodename) == 3
        # a turn for each reply the agent played (the question may reach the model as more
        # than one turn on a busy machine, and a reply cut off before it played is no turn)
        replies = sum(len(s.replies) for s in stack.gemini.sessions)
        turns = {k: value(during, "gemini_agent_turns_total", kind=k) for k in ("browser", "phone", "meeting")}
        assert turns["browser"] >= 1 and turns["meeting"] >= 1 and sum(turns.values()) <= replies, turns
        assert value(during, "gemini_agent_tool_calls_total", tool="get_current_time") == 1
        assert value(during, "gemini_agent_tool_errors_total", tool="get_current_time") == 1
        assert value(during, "gemini_agent_model_tokens_total", kind="input_audio") > 0
        assert value(during, "gemini_agent_model_tokens_total", kind="output_audio") > 0
        # per-turn latency by call kind: the browser's question and Carol's in the meeting,
        # from the last spoken frame at the agent to the agent's first audio (the offline model
        # answers once 500 ms of silence end a turn)
        for kind in ("browser", "meeting"):
            turns = value(during, "gemini_agent_turn_latency_seconds_count", kind=kind)
            mean = value(during, "gemini_agent_turn_latency_seconds_sum", kind=kind) / max(turns, 1)
            assert turns >= 1 and 0.4 <= mean <= 5.0, (kind, turns, mean)

        for c in callers:
            await asyncio.wait_for(c.leave(), 15)
        callers = []

        async def all_ended() -> dict:
            while True:
                after = await scrape(worker)
                if sum(v for (n, _), v in after.items() if n == "gemini_agent_calls_ended_total") == 3 and \
                        value(after, "lk_agents_active_job_count", nodename=os.uname().nodename) == 0:
                    return after
                await asyncio.sleep(0.5)

        after = await asyncio.wait_for(all_ended(), 45)
        for kind in ("browser", "phone", "meeting"):
            assert value(after, "gemini_agent_active_calls", kind=kind) == 0, kind
        # every person left: the framework closes the session as user_initiated
        assert value(after, "gemini_agent_calls_ended_total", reason="user_initiated") == 3
    finally:
        stack.gemini.script.reset()
        for c in callers:
            await asyncio.wait_for(c.leave(), 15)

    # log context: every line of a call's job carries its room and job; after the session
    # starts, its participant
    lines = [json.loads(line) for line in worker.log_tail(10**8).splitlines() if line.startswith("{")]
    started = {ln["room"]: ln for ln in lines if ln.get("message") == "starting session"}
    assert set(started) == {"obs-browser", "obs-phone", "obs-meeting"}
    browser_job = started["obs-browser"]["job_id"]
    job_lines = [ln for ln in lines if ln.get("pid") == started["obs-browser"]["pid"]
                 and ln.get("message") not in ("initializing process", "process initialized")]
    assert job_lines and all(ln.get("room") == "obs-browser" and ln.get("job_id") == browser_job
                             for ln in job_lines), [ln for ln in job_lines if ln.get("room") != "obs-browser"][:3]
    tool_line = next(ln for ln in job_lines if "ToolError" in ln.get("message", ""))
    assert tool_line["participant"] == "alice"

    # tracing: the framework's spans for the calls reached the OTLP collector
    async def spans_arrived() -> None:
        while not {"agent_session", "function_tool"} <= {s.name for s in otlp.spans}:
            await asyncio.sleep(0.2)

    await asyncio.wait_for(spans_arrived(), 30)
    assert any(r.get("service.name") == "gemini-agent" for r in otlp.resources)

    # the benchmarks' latency trace: one file per call, closed when its job ended, holding
    # every kind of event bench/ reads, in the order a call starts
    base = worker.env["AGENT_LATENCY__TRACE_FILE"]
    files = {room: glob.glob(f"{base}.*.{room}.jsonl") for room in ("obs-browser", "obs-phone", "obs-meeting")}
    assert all(len(f) == 1 for f in files.values()), files
    with open(files["obs-browser"][0], encoding="utf-8") as f:
        trace = [json.loads(line) for line in f]
    first = {}
    for e in trace:
        first.setdefault(e["ev"], e["t"])
    startup = ["job_received", "job_accepted", "job_assigned", "job_launched", "job_entry",
               "room_connected", "participant", "session_started"]
    assert [ev for ev in startup if ev in first] == startup, sorted(first)
    assert sorted(startup, key=first.__getitem__) == startup, {ev: first[ev] for ev in startup}
    assert {"open", "gemini_connect", "gemini_connected", "agent_published", "agent_subscribed",
            "in", "sent", "model", "play"} <= set(first), sorted(first)
    # the question went in and the echo came out, loud, at each hop
    assert all(any(e["ev"] == ev and e["lvl"] >= 500 for e in trace) for ev in ("in", "model", "play"))

