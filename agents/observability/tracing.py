"""OpenTelemetry tracing of calls, switched on by `observability.tracing_otlp_endpoint`.

The agents framework traces each session itself (session, user and agent turns, model
requests, tool calls) through `livekit.agents.telemetry.set_tracer_provider`; this gives it
a provider exporting over OTLP/HTTP. Set up once per job process, flushed when a job ends.
"""

from __future__ import annotations

import asyncio
import os

from livekit.agents import JobContext, telemetry

from ..settings import Settings

_provider = None


def setup(settings: Settings):
    """The process's tracer provider, created on first use; None when tracing is off."""
    global _provider
    endpoint = settings.observability.tracing_otlp_endpoint
    if not endpoint:
        return None
    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", "gemini-agent")}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        telemetry.set_tracer_provider(provider, allow_pii=settings.observability.tracing_include_content)
        _provider = provider
    return _provider


def trace_job(ctx: JobContext, settings: Settings) -> None:
    """Tracing for this job, its spans flushed to the collector when the job ends."""
    provider = setup(settings)
    if provider is None:
        return

    async def flush() -> None:
        await asyncio.get_running_loop().run_in_executor(None, provider.force_flush, 5000)

    ctx.add_shutdown_callback(flush)
