"""Lint, render and schema-validate the Helm chart offline (no cluster, no helm binary).

Run: .venv/bin/python -m pytest deploy/tests -q
Optional: CROSSL_SERVE_BIN=target/debug/crossl-serve also checks that every CROSSL_* variable the chart
sets is a real flag of `crossl-serve serve` (clap lists them as [env: CROSSL_…=]).
"""

import os
import pathlib
import re
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[1] / "helm" / "crossl-serve"
KUBE_VERSION = "1.30.0"

FULL_VALUES = {
    "apiKeysSecret": "crossl-keys",
    "tlsSecret": "crossl-tls",
    "autoscaling": {"enabled": True},
    "serviceMonitor": {"enabled": True},
    "executionProvider": "auto",
    "workers": 2,
}


def render(values=None):
    chart = helm.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name="har", namespace="default", is_install=True)
    finally:
        chart.close()
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_lint_is_clean():
    report = helm.lint(str(CHART), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["defaults", "full"])
def test_rendered_objects_match_kubernetes_schemas(values):
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # CRD: no upstream schema to check against
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_probes_ports_and_graceful_shutdown():
    (deploy,) = by_kind(render(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "grpc": 50051, "metrics": 9090}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["terminationGracePeriodSeconds"] >= 10
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_tls_and_api_keys_are_wired_from_secrets():
    (deploy,) = by_kind(render(FULL_VALUES), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["CROSSL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "crossl-keys"
    assert env["CROSSL_TLS_CERT"]["value"].startswith("/etc/crossl/tls/")
    assert any(v.get("secret", {}).get("secretName") == "crossl-tls" for v in pod["volumes"])
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert not by_kind(render(FULL_VALUES), "Deployment")[0]["spec"].get("replicas")


def test_every_crossl_env_var_is_a_server_flag():
    binary = os.environ.get("CROSSL_SERVE_BIN")
    if not binary:
        pytest.skip("set CROSSL_SERVE_BIN to the built crossl-serve binary to cross-check env names")
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    known = set(re.findall(r"env: (CROSSL_[A-Z0-9_]+)=", help_text))
    (deploy,) = by_kind(render(FULL_VALUES), "Deployment")
    used = {e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    used |= set(yaml.safe_load((CHART / "values.yaml").read_text())["env"])
    unknown = sorted(n for n in used if n.startswith("CROSSL_") and n not in known)
    assert not unknown, f"chart sets variables the server does not read: {unknown}"
