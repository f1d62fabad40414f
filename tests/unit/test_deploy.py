"""The deploy files, validated without a Docker engine or a cluster: docker-compose (Debian's
v1) renders the compose files, `kubectl kustomize` renders every overlay, every object is
checked against the Kubernetes schema, and what kiln relies on is asserted (commands,
healthchecks, probes, grace periods, GPU placement, queue scalers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.common.clients import SERVICE_NAMES
from services.common.settings import DEFAULT_PORTS, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
WORKERS = {f"{s}-worker" for s in SERVICES}
GPU_PROCESSES = {"inference", "inference-worker", "trainer-worker"}
KUBERNETES_VERSION = "1.32.0"


def compose(*files: str) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: deploy/dev/setup.sh installs it")
    args = ["docker-compose", *(a for f in files for a in ("-f", f))]
    out = subprocess.run(
        [*args, "config"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return yaml.safe_load(out.stdout)


def kustomize(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (client) is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_compose_runs_every_server_and_worker_on_real_redis_and_minio() -> None:
    config = compose("docker-compose.yml")
    services = config["services"]
    assert set(services) == {
        *("redis", "minio", "minio-init", "flower", "inference-openai"),
        *SERVICES,
        *WORKERS,
    }
    api = services["inference-openai"]
    assert api["command"] == ["services.inference", "openai"]
    assert api["ports"][0]["target"] == Settings().http_port
    assert "/health" in api["healthcheck"]["test"][-1]
    assert services["flower"]["profiles"] == ["monitoring"]  # started only with the profile
    assert services["minio-init"]["entrypoint"][:3] == ["mc", "mb", "--ignore-existing"]
    for s in SERVICES:
        server, worker = services[s], services[f"{s}-worker"]
        assert server["command"] == [f"services.{s}", "serve"]
        assert worker["command"] == [f"services.{s}", "worker"]
        assert server["healthcheck"]["test"] == ["CMD", "kiln", "health", s]
        port = DEFAULT_PORTS[s]
        assert server["ports"][0]["target"] == port
        for process in (server, worker):
            assert process["depends_on"] == {
                "redis": {"condition": "service_healthy"},
                "minio-init": {"condition": "service_completed_successfully"},
            }
            env = process["environment"]
            assert env["KILN_REDIS_URL"] == "redis://redis:6379/0"
            assert env["KILN_S3_ENDPOINT"] == "minio:9000"
            assert all(env[f"KILN_{t.upper()}_HOST"] == t for t in SERVICES)
            assert "deploy" not in process  # no GPU without the override
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_compose_gpu_override_reserves_gpus_for_model_processes() -> None:
    services = compose("docker-compose.yml", "deploy/compose/gpu.yml")["services"]
    with_gpu = {
        name
        for name, s in services.items()
        if any(
            d.get("capabilities") == ["gpu"]
            for d in s.get("deploy", {})
            .get("resources", {})
            .get("reservations", {})
            .get("devices", [])
        )
    }
    assert with_gpu == GPU_PROCESSES


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_overlay_renders_valid_objects(overlay: str) -> None:
    import kubernetes_validate

    objects = kustomize(overlay)
    for obj in objects:
        if obj["kind"] == "ScaledObject":  # a KEDA CRD: checked in the prod test below
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    deployments = by_kind(objects, "Deployment")
    assert {*SERVICES, *WORKERS, "inference-openai"} <= set(deployments)
    (api,) = deployments["inference-openai"]["spec"]["template"]["spec"]["containers"]
    assert api["args"] == ["services.inference", "openai"]
    assert api["ports"] == [{"name": "http", "containerPort": Settings().http_port}]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert by_kind(objects, "Service")["inference-openai"]["spec"]["ports"][0]["port"] == 8000
    grace = Settings().shutdown_grace_s
    config = by_kind(objects, "ConfigMap")["kiln-config"]["data"]
    assert float(config["KILN_SHUTDOWN_GRACE_S"]) == grace
    for s in SERVICES:
        spec = deployments[s]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"] == [f"services.{s}", "serve"]
        assert container["ports"][0]["containerPort"] == DEFAULT_PORTS[s]
        assert spec["terminationGracePeriodSeconds"] > grace
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
        worker = deployments[f"{s}-worker"]["spec"]["template"]["spec"]["containers"][0]
        assert worker["args"] == [f"services.{s}", "worker"]
        service = by_kind(objects, "Service")[s]["spec"]["ports"][0]
        assert service["port"] == DEFAULT_PORTS[s] and service["appProtocol"] == "grpc"


def test_dev_overlay_probes_grpc_health_and_runs_its_own_stores() -> None:
    objects = kustomize("dev")
    deployments = by_kind(objects, "Deployment")
    assert {"redis", "minio"} <= set(deployments) and "minio-buckets" in by_kind(objects, "Job")
    for s in SERVICES:
        container = deployments[s]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["grpc"] == {
            "port": DEFAULT_PORTS[s],
            "service": SERVICE_NAMES[s],
        }
        assert container["startupProbe"]["grpc"]["port"] == DEFAULT_PORTS[s]
        assert container["image"] == "kiln:cpu"
        assert {"name": "metrics", "containerPort": 9100} in container["ports"]
        annotations = deployments[s]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == "9100"
    config = by_kind(objects, "ConfigMap")["kiln-config"]["data"]
    assert config["KILN_METRICS_PORT"] == "9100"
    assert not any(
        "nvidia.com/gpu" in str(d["spec"]["template"]["spec"]) for d in deployments.values()
    )


def test_prod_overlay_scales_on_queues_with_gpus_and_mtls() -> None:
    objects = kustomize("prod")
    deployments = by_kind(objects, "Deployment")
    assert not {"redis", "minio"} & set(deployments) and "minio-buckets" not in by_kind(
        objects, "Job"
    )
    gpu = {
        name
        for name, d in deployments.items()
        if d["spec"]["template"]["spec"]["containers"][0]
        .get("resources", {})
        .get("limits", {})
        .get("nvidia.com/gpu")
        == 1
    }
    assert gpu == GPU_PROCESSES
    scalers = by_kind(objects, "ScaledObject")
    assert set(scalers) == WORKERS
    for s in SERVICES:
        spec = scalers[f"{s}-worker"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"{s}-worker"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == s
        server = deployments[s]["spec"]
        assert server["replicas"] == 2
        container = server["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["exec"]["command"][:3] == ["kiln", "health", s]
    config = by_kind(objects, "ConfigMap")["kiln-config"]["data"]
    assert config["KILN_TLS_CA"] == "/etc/kiln/tls/ca.crt"
    for d in deployments.values():
        mounts = d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "tls", "mountPath": "/etc/kiln/tls", "readOnly": True} in mounts
