"""Lint, render and schema-validate the Helm chart offline (no cluster, no helm binary), for every value set
in the chart's ci/ folder (chart-testing convention), against the Kubernetes 1.33 schemas.

Run: .venv/bin/python -m pytest deploy/tests -q
Optional: CROSSL_SERVE_BIN=target/debug/crossl-serve also checks that every CROSSL_* variable the chart
sets is a real flag of `crossl-serve serve` (clap lists them as [env: CROSSL_…=]).

CRDs (ServiceMonitor, PrometheusRule, HTTPRoute, GRPCRoute) have no upstream schema in kubernetes-validate:
their shape is checked here field by field instead.
"""

import json
import os
import pathlib
import re
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[1]
CHART = DEPLOY / "helm" / "crossl-serve"
KUBE_VERSION = "1.33.0"
RELEASE = "har"
FULLNAME = "har-crossl-serve"

VALUE_SETS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
CRD_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")



def ci_values(name):
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}




def render_files(values=None):
    chart = helm.Chart.load(str(CHART))
    try:
        return chart.render(values or {}, name=RELEASE, namespace="default", is_install=True)
    finally:
        chart.close()


def render(values=None):
    docs = []
    for path, text in sorted(render_files(values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def server_pod(docs):
    (deploy,) = by_kind(docs, "Deployment")
    return deploy["spec"]["template"]


def settings(docs):
    return named(docs, "ConfigMap", FULLNAME)["data"]


def env_of(docs):
    return {e["name"]: e for e in server_pod(docs)["spec"]["containers"][0].get("env", [])}


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


# --- every value set ---------------------------------------------------------------------------------------


def test_value_sets_exist():
    assert {"default-values.yaml", "gpu-values.yaml", "redis-values.yaml"} <= set(VALUE_SETS)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_is_clean(value_set):
    report = helm.lint(str(CHART), ci_values(value_set), strict=True, kube_version=KUBE_VERSION)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_match_kubernetes_schemas(value_set):
    docs = render(ci_values(value_set))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "Pod"} <= kinds
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue  # shape checked by test_custom_resources_have_the_expected_shape
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_custom_resources_have_the_expected_shape(value_set):
    docs = render(ci_values(value_set))
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    for sm in by_kind(docs, "ServiceMonitor"):
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        targets = [s for s in services.values() if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert [t["metadata"]["name"] for t in targets] == [f"{FULLNAME}-metrics"], "scrapes the metrics Service only"
        ports = {p["name"] for p in targets[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in ports and ep["path"] == "/metrics"
            assert re.fullmatch(r"[0-9]+(ms|s|m|h)", ep["interval"])
    for rule in by_kind(docs, "PrometheusRule"):
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        check_rule_groups(rule["spec"])
    for route in by_kind(docs, "HTTPRoute") + by_kind(docs, "GRPCRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        spec = route["spec"]
        assert spec["parentRefs"] and all("name" in p for p in spec["parentRefs"])
        assert set(spec) <= {"parentRefs", "hostnames", "rules"}
        for rule in spec["rules"]:
            allowed = {"matches", "backendRefs", "filters", "timeouts"} if route["kind"] == "HTTPRoute" else {"matches", "backendRefs", "filters"}
            assert set(rule) <= allowed, rule
            for ref in rule["backendRefs"]:
                port_name = "http" if route["kind"] == "HTTPRoute" else "grpc"
                svc_ports = {p["name"]: p["port"] for p in services[ref["name"]]["spec"]["ports"]}
                assert ref["port"] == svc_ports[port_name]
            for value in rule.get("timeouts", {}).values():
                assert re.fullmatch(r"([0-9]{1,5}(h|m|s|ms)){1,4}", value), value  # Gateway API Duration


# --- alerts and dashboard ------------------------------------------------------------------------------------


def check_rule_groups(spec):
    assert set(spec) == {"groups"} and spec["groups"]
    for group in spec["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule
            assert rule["alert"] and rule["expr"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alerts_file_is_a_valid_rule_file_covering_the_issue():
    spec = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    check_rule_groups(spec)
    alerts = {r["alert"]: r["expr"] for g in spec["groups"] for r in g["rules"]}
    assert "crossl_ready" in alerts["CrosslServeNotReady"]
    assert "crossl_windows_shed_total" in alerts["CrosslServeShedding"]
    assert "crossl_end_to_end_latency_seconds_bucket" in alerts["CrosslServeHighLatencyP99"]
    assert 'execution_provider="cpu"' in alerts["CrosslServeCpuFallbackOnGpu"]
    assert "crossl_build_info" in alerts["CrosslServeCpuFallbackOnGpu"]
    assert "crossl_store_errors_total" in alerts["CrosslServeStoreErrors"]
    assert "crossl_max_devices" in alerts["CrosslServeDevicesNearCap"]


def test_chart_ships_the_same_alerts_and_dashboard_as_deploy():
    assert (CHART / "files" / "alerts.yaml").read_bytes() == (DEPLOY / "prometheus" / "alerts.yaml").read_bytes(), \
        "copy deploy/prometheus/alerts.yaml to the chart's files/"
    assert (CHART / "files" / "crossl-serve.json").read_bytes() == (DEPLOY / "grafana" / "crossl-serve.json").read_bytes(), \
        "copy deploy/grafana/crossl-serve.json to the chart's files/"


def test_prometheus_rule_and_dashboard_configmap_when_enabled():
    docs = render(ci_values("gpu-values.yaml"))
    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dash = named(docs, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["crossl-serve.json"]) == json.loads((DEPLOY / "grafana" / "crossl-serve.json").read_text())
    default = render()
    assert not by_kind(default, "PrometheusRule") and not by_kind(default, "ServiceMonitor")
    assert [d["metadata"]["name"] for d in by_kind(default, "ConfigMap")] == [FULLNAME]


def test_dashboard_has_the_panels_the_issue_asks_for():
    dash = json.loads((DEPLOY / "grafana" / "crossl-serve.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for needle in [
        "crossl_open_streams",  # devices streaming
        "crossl_window_closes_total",  # windows/s by outcome
        "crossl_windows_shed_total",
        "crossl_chunks_rejected_total",  # late by reason
        "crossl_queue_wait_seconds_bucket",
        "crossl_inference_seconds_bucket",
        "crossl_end_to_end_latency_seconds_bucket",
        "crossl_build_info",  # execution provider
        "crossl_predictions_by_class_total",
        "crossl_store_errors_total",
        "crossl_queue_depth",
        "process_resident_memory_bytes",
    ]:
        assert needle in exprs, needle


# --- the server pod -------------------------------------------------------------------------------------------


def test_probes_ports_and_graceful_shutdown_match_the_drain():
    docs = render()
    pod = server_pod(docs)["spec"]
    (container,) = pod["containers"]
    assert "env" not in container, "defaults: every setting comes from the ConfigMap"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "grpc": 50051, "metrics": 9090}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert settings(docs)["CROSSL_DRAIN_TIMEOUT_MS"] == "10000"
    assert pod["terminationGracePeriodSeconds"] == 5 + 10 + 5
    longer = render({"shutdown": {"preStopSleepSeconds": 10, "drainTimeoutMs": 30500, "shutdownMarginSeconds": 3}})
    assert server_pod(longer)["spec"]["terminationGracePeriodSeconds"] == 10 + 31 + 3
    assert settings(longer)["CROSSL_DRAIN_TIMEOUT_MS"] == "30500"


def test_settings_come_from_a_configmap_whose_checksum_restarts_pods():
    docs = render({"config": {"CROSSL_MAX_DEVICES": 500, "CROSSL_WORKERS": "9"}})
    pod = server_pod(docs)
    assert pod["spec"]["containers"][0]["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    data = settings(docs)
    assert data["CROSSL_MAX_DEVICES"] == "500"
    assert data["CROSSL_WORKERS"] == "1", "the chart's own keys win over config"
    assert data["CROSSL_HTTP_ADDR"] == "0.0.0.0:8080" and "CROSSL_STORE" not in data
    before = pod["metadata"]["annotations"]["checksum/config"]
    after = server_pod(render({"config": {"CROSSL_MAX_DEVICES": 501}}))["metadata"]["annotations"]["checksum/config"]
    assert re.fullmatch(r"[0-9a-f]{64}", before) and before != after


def test_service_account_has_no_token_and_replicas_spread():
    docs = render()
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    pod = server_pod(docs)["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in pod["topologySpreadConstraints"])


def test_tls_and_api_keys_from_existing_secrets():
    docs = render(ci_values("redis-values.yaml"))
    pod = server_pod(docs)["spec"]
    env = env_of(docs)
    assert env["CROSSL_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "crossl-api-keys", "key": "api-keys"}
    assert env["CROSSL_TLS_CERT"]["value"].startswith("/etc/crossl/tls/")
    assert any(v.get("secret", {}).get("secretName") == "crossl-tls" for v in pod["volumes"])
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert not by_kind(docs, "Deployment")[0]["spec"].get("replicas"), "the HPA owns replicas"
    assert not [s for s in by_kind(docs, "Secret")], "existing secrets: the chart makes none"


def test_chart_made_secrets_change_the_secret_checksum():
    a = render({"auth": {"apiKeys": "k1:ingest,read"}, "tls": {"cert": "CERT", "key": "KEY"}})
    secrets = {s["metadata"]["name"]: s for s in by_kind(a, "Secret")}
    assert secrets[f"{FULLNAME}-api-keys"]["stringData"] == {"api-keys": "k1:ingest,read"}
    assert secrets[f"{FULLNAME}-tls"]["type"] == "kubernetes.io/tls"
    assert env_of(a)["CROSSL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULLNAME}-api-keys"
    b = render({"auth": {"apiKeys": "k2:read"}, "tls": {"cert": "CERT", "key": "KEY"}})
    key = "checksum/secret"
    assert server_pod(a)["metadata"]["annotations"][key] != server_pod(b)["metadata"]["annotations"][key]


# --- Services, exposure, routing -------------------------------------------------------------------------------


def test_metrics_never_on_a_public_service():
    docs = render(ci_values("redis-values.yaml"))
    public = named(docs, "Service", FULLNAME)
    assert public["spec"]["type"] == "LoadBalancer"
    ports = {p["name"]: p for p in public["spec"]["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert ports["grpc"]["appProtocol"] == "grpc"  # TLS on: gRPC over TLS
    metrics = named(docs, "Service", f"{FULLNAME}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in metrics["spec"]["ports"]] == ["metrics"]
    for svc in by_kind(docs, "Service"):
        if svc["spec"].get("type") in ("LoadBalancer", "NodePort"):
            assert all(p["port"] != 9090 and p["targetPort"] != "metrics" for p in svc["spec"]["ports"])
    plain = named(render(), "Service", FULLNAME)
    assert {p["name"]: p["appProtocol"] for p in plain["spec"]["ports"]} == {"http": "http", "grpc": "kubernetes.io/h2c"}


def test_headless_service_for_client_side_grpc_balancing():
    svc = named(render(), "Service", f"{FULLNAME}-headless")
    assert svc["spec"]["clusterIP"] == "None"
    assert "grpc" in {p["name"] for p in svc["spec"]["ports"]}


def test_ingress_and_gateway_routes_keep_streams_open():
    docs = render(ci_values("redis-values.yaml"))
    grpc = named(docs, "Ingress", f"{FULLNAME}-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert int(grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert grpc["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"] == "grpc"
    http = named(docs, "Ingress", f"{FULLNAME}-http")
    assert http["spec"]["rules"][0]["host"] == "har.example.com"
    (route,) = by_kind(docs, "HTTPRoute")
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    (groute,) = by_kind(docs, "GRPCRoute")
    assert groute["spec"]["hostnames"] == ["devices.har.example.com"]
    assert not by_kind(render(), "Ingress") and not by_kind(render(), "HTTPRoute")


def test_pdb_never_blocks_a_drain_by_default():
    (pdb,) = by_kind(render(), "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    (scaled,) = by_kind(render(ci_values("redis-values.yaml")), "PodDisruptionBudget")
    assert scaled["spec"]["minAvailable"] == 2 and "maxUnavailable" not in scaled["spec"]


def test_hpa_on_cpu_or_queue_wait():
    (cpu,) = by_kind(render({"autoscaling": {"enabled": True}}), "HorizontalPodAutoscaler")
    assert cpu["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    (queue,) = by_kind(render(ci_values("redis-values.yaml")), "HorizontalPodAutoscaler")
    (metric,) = queue["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "crossl_queue_wait_seconds_mean"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "50m"}
    rules = (DEPLOY / "prometheus" / "adapter-rules.yaml").read_text()
    assert "crossl_queue_wait_seconds_mean" in rules and "crossl_queue_wait_seconds_sum" in rules


def test_service_monitor_extra_labels():
    (sm,) = by_kind(render(ci_values("gpu-values.yaml")), "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["podTargetLabels"] == ["accelerator"]


# --- Redis ---------------------------------------------------------------------------------------------------------


def test_redis_deployed_by_the_chart():
    docs = render(ci_values("redis-values.yaml"))
    assert settings(docs)["CROSSL_STORE"] == f"redis://{FULLNAME}-redis:6379"
    (sts,) = by_kind(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    redis_labels = sts["spec"]["template"]["metadata"]["labels"]
    for svc in by_kind(docs, "Service"):
        if svc["metadata"]["name"] != f"{FULLNAME}-redis":
            assert not selects(svc["spec"]["selector"], redis_labels), "server Services must not reach Redis pods"
    assert selects(named(docs, "Service", f"{FULLNAME}-redis")["spec"]["selector"], redis_labels)
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert selects(policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"], server_pod(docs)["metadata"]["labels"])
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"


def test_external_redis_by_url_or_secret():
    by_url = render({"redis": {"url": "redis://redis.data.svc:6379/0"}})
    assert settings(by_url)["CROSSL_STORE"] == "redis://redis.data.svc:6379/0"
    assert not by_kind(by_url, "StatefulSet")
    by_secret = render({"redis": {"existingSecret": "redis-creds"}})
    assert "CROSSL_STORE" not in settings(by_secret)
    assert env_of(by_secret)["CROSSL_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "redis-creds", "key": "redis-url"}


# --- the schema refuses what would crash-loop or conflict -----------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"executionProvider": "cuda"}, "nvidia.com/gpu"),
        ({"executionProvider": "cuda", "resources": {"limits": {"nvidia.com/gpu": 1}}}, "cuda"),
        ({"executionProvider": "cuda", "image": {"variant": "cuda"}}, "nvidia.com/gpu"),
        ({"executionProvider": "gpu"}, "executionProvider"),
        ({"resources": {"limits": {"nvidia.com/gpu": 1}}}, "variant"),
        ({"redis": {"enabled": True, "url": "redis://elsewhere:6379"}}, "url"),
        ({"redis": {"url": "redis://a:6379", "existingSecret": "s"}}, "redis"),
        ({"redis": {"url": "http://a:6379"}}, "url"),
        ({"tls": {"cert": "CERT"}}, "key"),
        ({"gateway": {"enabled": True}}, "parentRefs"),
        ({"ingress": {"enabled": True}}, "ingress"),
        ({"podDisruptionBudget": {"maxUnavailable": "one"}}, "maxUnavailable"),
        ({"config": {"CROSSL_API_KEYS": "k:read"}}, "config"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_schema_refuses(values, message):
    with pytest.raises(Exception) as err:
        render(values)
    assert "schema" in str(err.value) and message in str(err.value), str(err.value)


def test_gpu_value_set_runs_cuda_on_the_cuda_image():
    docs = render(ci_values("gpu-values.yaml"))
    pod = server_pod(docs)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "crossl-serve:0.1.0-cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings(docs)["CROSSL_EXECUTION_PROVIDER"] == "cuda"
    assert pod["metadata"]["labels"]["accelerator"] == "nvidia-gpu"
    assert "accelerator" not in server_pod(render())["metadata"]["labels"]


def test_batch_size_is_the_servers_per_provider_default_unless_set():
    # unset on CPU: the server picks its CPU default (small batches); the GPU value set asks for large ones
    assert "CROSSL_MAX_BATCH_SIZE" not in settings(render())
    gpu = settings(render(ci_values("gpu-values.yaml")))
    assert (gpu["CROSSL_MAX_BATCH_SIZE"], gpu["CROSSL_QUEUE_CAPACITY"]) == ("256", "2048")
    assert settings(render({"batching": {"maxBatchSize": 16}}))["CROSSL_MAX_BATCH_SIZE"] == "16"


# --- helm test -------------------------------------------------------------------------------------------------------


def test_helm_test_pod_checks_readyz_and_one_prediction():
    docs = render(ci_values("redis-values.yaml"))
    (pod,) = by_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "/readyz" in script and "/v1/predict" in script and '"label"' in script
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["BASE"]["value"] == f"https://{FULLNAME}:8080"
    assert env["API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "crossl-test-key"
    for svc in by_kind(docs, "Service"):
        assert not selects(svc["spec"]["selector"], pod["metadata"]["labels"])
    notes = render_files(ci_values("redis-values.yaml"))["crossl-serve/templates/NOTES.txt"]
    assert "helm test har" in notes and "Redis" in notes


def test_every_crossl_env_var_is_a_server_flag():
    binary = os.environ.get("CROSSL_SERVE_BIN")
    if not binary:
        pytest.skip("set CROSSL_SERVE_BIN to the built crossl-serve binary to cross-check env names")
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    known = set(re.findall(r"env: (CROSSL_[A-Z0-9_]+)=", help_text))
    used = set()
    for value_set in VALUE_SETS:
        docs = render(ci_values(value_set))
        used |= set(settings(docs)) | set(env_of(docs))
    used |= set(env_of(render({"redis": {"existingSecret": "s"}})))
    unknown = sorted(n for n in used if n.startswith("CROSSL_") and n not in known)
    assert not unknown, f"chart sets variables the server does not read: {unknown}"
