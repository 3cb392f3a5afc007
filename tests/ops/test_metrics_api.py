"""The product metrics' entry points for other layers, in this process's registry."""

from __future__ import annotations


def test_connection_layer_and_telephony_report_through_the_metrics_module():
    """The two entry points other layers call (the Gemini connection layer's reconnects and
    faults, telephony's transfers) land in the counters the worker exposes."""
    from prometheus_client import REGISTRY

    from agents.observability import metrics

    def count(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = count("gemini_agent_gemini_connection_events_total", kind="reconnect", cause="go_away")
    metrics.gemini_connection_event("reconnect", "go_away")
    metrics.gemini_connection_event("fault", "")
    assert count("gemini_agent_gemini_connection_events_total", kind="reconnect", cause="go_away") == before + 1
    assert count("gemini_agent_gemini_connection_events_total", kind="fault", cause="unknown") >= 1
    failed = count("gemini_agent_phone_transfers_total", result="failed")
    metrics.phone_transfer(ok=False)
    assert count("gemini_agent_phone_transfers_total", result="failed") == failed + 1
