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


def test_a_crashed_call_process_leaves_no_active_call(tmp_path):
    """A job process that dies mid-call (killed, crashed) never decrements its active-calls
    gauge; the worker's reaper drops the gauges of processes that are gone."""
    import os
    import subprocess
    import sys

    from prometheus_client import CollectorRegistry, multiprocess

    from agents.observability.multiproc import reap_dead_processes

    call = ("from agents.observability import metrics\n"
            "metrics.ACTIVE_CALLS.labels(kind='phone').inc()\n"
            "metrics.CALLS.labels(kind='phone').inc()\n"
            "import os; os._exit(9)  # dies without ending the call\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
           "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])}
    assert subprocess.run([sys.executable, "-c", call], env=env, timeout=60).returncode == 9

    def scrape() -> dict:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
        return {(s.name, tuple(s.labels.items())): s.value for m in registry.collect() for s in m.samples}

    assert scrape()[("gemini_agent_active_calls", (("kind", "phone"),))] == 1
    assert reap_dead_processes(str(tmp_path))
    after = scrape()
    assert after.get(("gemini_agent_active_calls", (("kind", "phone"),)), 0) == 0
    assert after[("gemini_agent_calls_total", (("kind", "phone"),))] == 1  # counters stay
