"""The Kubernetes manifests in docs/k8s are valid and consistent.

Built-in kinds are checked by kubernetes-validate (Kubernetes' own OpenAPI schemas,
strict: unknown fields fail); LLMKube's custom resources by the JSON schema in
docs/k8s/schemas, and by LLMKube's real CRDs when LLMKUBE_CRD_DIR names a folder of them
(config/crd/bases of defilantech/LLMKube). The server flags in them must parse, and the
HPA's metric must be one that /metrics serves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S = Path(__file__).resolve().parents[2] / "docs" / "k8s"
KUBERNETES_VERSION = "1.33.0"
LLMKUBE_GROUP = "inference.llmkube.dev/"


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


DOCS = _docs()


def _of(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


@pytest.mark.parametrize("name,doc", DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_manifest_is_valid(name, doc):
    if doc["apiVersion"].startswith(LLMKUBE_GROUP):
        schema = json.loads((K8S / "schemas" / "llmkube-v1alpha1.json").read_text())
        jsonschema.validate(doc, schema)
        _validate_against_crd(doc)
    else:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)


def _validate_against_crd(doc: dict) -> None:
    crd_dir = os.environ.get("LLMKUBE_CRD_DIR")
    if not crd_dir:
        return
    for path in Path(crd_dir).glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd.get("spec", {}).get("names", {}).get("kind") != doc["kind"]:
            continue
        version = doc["apiVersion"].split("/")[1]
        (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        jsonschema.validate(doc, v["schema"]["openAPIV3Schema"])
        return
    pytest.fail(f"no CRD for {doc['kind']} in {crd_dir}")


def test_invalid_manifest_is_rejected():
    """The validators really validate: a wrong type and an unknown field both fail."""
    (deployment,) = _of("Deployment")
    bad = json.loads(json.dumps(deployment))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)
    (isvc,) = _of("InferenceService")
    bad = dict(isvc, spec={**isvc["spec"], "parallelSlot": 4})
    schema = json.loads((K8S / "schemas" / "llmkube-v1alpha1.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_service_and_hpa_point_at_the_deployment():
    (deployment,) = _of("Deployment")
    (service,) = _of("Service")
    (hpa,) = _of("HorizontalPodAutoscaler")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert str(port) in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_server_flags_parse():
    from mlx_server.cli import parse_args

    (deployment,) = _of("Deployment")
    config = parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"], env={})
    assert (config.server.host, config.server.port, config.engine.max_slots) == ("0.0.0.0", 8080, 4)
    # LLMKube's llamacpp runtime starts the image with llama-server's arguments.
    (isvc,) = _of("InferenceService")
    spec = isvc["spec"]
    line = ["--model", "/models/gemma-3-270m-Q8_0.gguf", "--port", "8080", "--host", "::",
            "--n-gpu-layers", "99", "--ctx-size", str(spec["contextSize"]), "--parallel",
            str(spec["parallelSlots"]), "--jinja", *spec["extraArgs"]]
    config = parse_args(line, env={})
    assert config.engine.max_slots == spec["parallelSlots"]
    assert config.engine.ctx_size == spec["contextSize"]


def test_autoscaling_metric_is_served_and_published():
    from mlx_server.server.metrics import Metrics

    (hpa,) = _of("HorizontalPodAutoscaler")
    (isvc,) = _of("InferenceService")
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    names |= {m["name"] for m in isvc["spec"]["autoscaling"]["metrics"]}
    assert names == {"llamacpp:requests_processing"}
    text = Metrics(lambda: "m", lambda: {"slots_busy": 3}).render().decode()
    assert "llamacpp:requests_processing 3" in text.splitlines()
    (adapter,) = _of("ConfigMap")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert any("llamacpp:" in r["seriesQuery"] for r in rules)
