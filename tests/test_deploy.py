"""deploy/: the Kubernetes manifests validate against the Kubernetes schemas
(kubernetes-validate, strict: no unknown fields), the compose file parses, and the streamswap
configs they carry load and point at the Triton service they define."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import require

from streamswap.config import load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSION = "1.30.0"


def _documents() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _load(text: str, tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_text(text)
    return load_config(path)


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        require(False, "kubernetes-validate (pip install kubernetes-validate)")
    docs = _documents()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ConfigMap", "Deployment", "Job", "PersistentVolumeClaim", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises with the bad field
    bad = {**docs[0], "spec": {**docs[0].get("spec", {}), "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_daemons_point_at_the_triton_service_and_probe_their_health(tmp_path: Path) -> None:
    docs = _documents()
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    triton_svc = by[("Service", "triton")]
    grpc_port = next(p["port"] for p in triton_svc["spec"]["ports"] if p["name"] == "grpc")
    claims = {name for kind, name in by if kind == "PersistentVolumeClaim"}

    triton = by[("Deployment", "triton")]["spec"]["template"]
    (server,) = triton["spec"]["containers"]
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    daemons = [d for (kind, name), d in by.items() if kind == "Deployment" and name.startswith("streamswap-")]
    assert len(daemons) >= 2
    for dep in daemons:
        pod = dep["spec"]["template"]
        (container,) = pod["spec"]["containers"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        config_map = by[("ConfigMap", volumes["config"]["configMap"]["name"])]
        config = _load(config_map["data"]["streamswap.yaml"], tmp_path, dep["metadata"]["name"] + ".yaml")
        assert config.inference.backend == "triton"
        assert config.inference.triton.url == f"triton:{grpc_port}"
        api_port = int(config.service.api.rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "api"}
        assert ports["api"] == api_port
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(api_port)
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] in claims
        assert any(e["name"] == "STREAMSWAP_API_TOKEN" for e in container["env"])  # api off localhost

    job = by[("Job", "triton-export")]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"][:2] == ["triton", "export"]
    claim_of = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in job["volumes"]}
    served = triton["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim_of["repository"] == served  # the Job writes what Triton serves


def test_compose_file_parses_and_its_daemon_config_loads(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    triton, daemon = services["triton"], services["streamswap-cam1"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "./triton-models:/models:ro" in triton["volumes"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert daemon["depends_on"]["triton"]["condition"] == "service_healthy"
    assert (DEPLOY / daemon["build"]["context"] / daemon["build"]["dockerfile"]).resolve().is_file()
    mounted = {v.split(":")[1]: v.split(":")[0] for v in daemon["volumes"]}
    config = load_config(DEPLOY / mounted["/etc/streamswap/streamswap.yaml"])
    assert config.inference.backend == "triton"
    host, port = config.inference.triton.url.split(":")
    assert host == "triton" and f"{port}:{port}" in triton["ports"][1]
    assert triton["ipc"] == daemon["ipc"] == "host"  # shared memory between the two containers
