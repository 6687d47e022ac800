"""The rendered manifests against the real schemas, strictly.

`rlm-sandbox k8s render` is validated against the agent-sandbox v0.5.6
CRDs (tests/fixtures/k8s/agent-sandbox-v0.5.6/, each CRD's
openAPIV3Schema made strict: an unknown field is an error wherever the
schema does not say x-kubernetes-preserve-unknown-fields) and its pod
against the Kubernetes Pod schema (kubernetes-validate, strict). No
cluster is needed. Each strictness claim has a negative control: a
deliberately broken manifest must FAIL, and must pass the non-strict
schema, so the test proves the strictness is what catches it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "tests/fixtures/k8s/agent-sandbox-v0.5.6"
BIN = os.environ.get("RLM_SANDBOX_BIN", str(ROOT / "target/release/rlm-sandbox"))
IMAGE = "localhost/rlm-sandbox-rootfs:0123456789abcdef"
RENDER = ["k8s", "render", "--namespace", "rlm", "--pool-size", "3", "--image", IMAGE]

Obj = Dict[str, Any]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The binary under test, with the environment's RLM_* settings removed
    so the default policy is what gets rendered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_") or k == "RLM_CACHE_DIR"}
    return subprocess.run(
        [BIN, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def rendered() -> Obj:
    """`k8s render --json`: objects, seccompProfile, warnings."""
    out = run(*RENDER, "--json")
    assert out.returncode == 0, out.stderr
    result: Obj = json.loads(out.stdout)
    return result


def crd_schema(filename: str, strict: bool) -> Obj:
    """The v1beta1 openAPIV3Schema of a CRD file, made strict on request."""
    crd = yaml.safe_load((CRDS / filename).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema: Obj = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    if strict:
        close_objects(schema)
    return schema


def close_objects(schema: Any) -> None:
    """additionalProperties: false on every object schema that lists its
    properties and neither allows extra ones nor preserves unknown fields
    (what the API server's structural-schema pruning would silently drop
    becomes an error here)."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            close_objects(value)
    elif isinstance(schema, list):
        for item in schema:
            close_objects(item)


def crd_errors(obj: Obj, filename: str, strict: bool = True) -> List[str]:
    validator = jsonschema.Draft7Validator(crd_schema(filename, strict))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def pod_of(template: Obj) -> Obj:
    """The Pod the SandboxTemplate's podTemplate makes (a copy: tests break it)."""
    pod_template = copy.deepcopy(template["spec"]["podTemplate"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "rlm-sandbox-pod", **pod_template["metadata"]},
        "spec": pod_template["spec"],
    }


def pod_errors(pod: Obj, strict: bool = True) -> List[str]:
    try:
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=strict)
    except kubernetes_validate.ValidationError as e:
        return [str(e.message)]
    return []


TEMPLATE_CRD = "extensions.agents.x-k8s.io_sandboxtemplates.yaml"
POOL_CRD = "extensions.agents.x-k8s.io_sandboxwarmpools.yaml"


def test_the_template_validates_against_the_strict_crd(rendered: Obj) -> None:
    template = rendered["objects"][0]
    assert template["kind"] == "SandboxTemplate"
    assert crd_errors(template, TEMPLATE_CRD) == []


def test_the_warm_pool_validates_against_the_strict_crd(rendered: Obj) -> None:
    pool = rendered["objects"][1]
    assert pool["kind"] == "SandboxWarmPool"
    assert crd_errors(pool, POOL_CRD) == []


def test_the_pod_validates_against_the_strict_pod_schema(rendered: Obj) -> None:
    assert pod_errors(pod_of(rendered["objects"][0])) == []


def broken_cases() -> Iterator[tuple[str, Callable[[Obj], None]]]:
    def template_spec(t: Obj) -> None:
        t["spec"]["egressAllowed"] = True

    def network_policy(t: Obj) -> None:
        t["spec"]["networkPolicy"]["allowAll"] = True

    def container(t: Obj) -> None:
        t["spec"]["podTemplate"]["spec"]["containers"][0]["securityContex"] = {}

    yield "template spec", template_spec
    yield "networkPolicy", network_policy
    yield "container (a misspelt securityContext)", container


@pytest.mark.parametrize(
    "where,breaks", [pytest.param(w, b, id=w) for w, b in broken_cases()]
)
def test_an_unknown_field_fails_the_crd_validation(
    rendered: Obj, where: str, breaks: Callable[[Obj], None]
) -> None:
    broken = copy.deepcopy(rendered["objects"][0])
    breaks(broken)
    errors = crd_errors(broken, TEMPLATE_CRD)
    assert errors, f"an unknown field in the {where} passed the strict schema"
    assert any("Additional properties" in e for e in errors), errors
    # Control: the CRD as shipped (not strict) lets it through, so it is
    # the strictness that catches it.
    assert crd_errors(broken, TEMPLATE_CRD, strict=False) == []


def test_an_unknown_field_fails_the_warm_pool_crd(rendered: Obj) -> None:
    broken = copy.deepcopy(rendered["objects"][1])
    broken["spec"]["size"] = 3
    assert crd_errors(broken, POOL_CRD), "an unknown warm pool field passed"
    assert crd_errors(broken, POOL_CRD, strict=False) == []


def test_an_unknown_field_fails_the_pod_schema(rendered: Obj) -> None:
    pod = pod_of(rendered["objects"][0])
    pod["spec"]["containers"][0]["securityContex"] = {"privileged": True}
    assert pod_errors(pod), "an unknown container field passed the strict Pod schema"
    assert pod_errors(pod, strict=False) == [], "control: the non-strict schema allows it"


def test_a_wrong_type_fails_the_pod_schema(rendered: Obj) -> None:
    pod = pod_of(rendered["objects"][0])
    pod["spec"]["containers"][0]["stdin"] = "yes"
    assert pod_errors(pod)


def test_the_yaml_stream_is_the_json_objects(rendered: Obj) -> None:
    """The YAML writer checked by an independent reader (PyYAML)."""
    out = run(*RENDER)
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load_all(out.stdout)) == rendered["objects"]
    assert "[seccomp-annotations]" in out.stderr and "podPidsLimit" in out.stderr


def test_output_dir_writes_the_manifests_and_the_nodes_profile(
    rendered: Obj, tmp_path: Path
) -> None:
    out = run(*RENDER, "--output-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load_all((tmp_path / "manifests.yaml").read_text())) == rendered["objects"]
    local = rendered["seccompProfile"]["localhostProfile"]
    profile = json.loads((tmp_path / "seccomp" / local).read_text())
    shipped = json.loads((ROOT / "bundles/seccomp/default.json").read_text())
    assert profile == shipped == rendered["seccompProfile"]["profile"]
    ctr = rendered["objects"][0]["spec"]["podTemplate"]["spec"]["containers"][0]
    assert ctr["securityContext"]["seccompProfile"]["localhostProfile"] == local


def test_check_passes_the_rendered_set_and_names_a_bad_edit(tmp_path: Path) -> None:
    text = run(*RENDER).stdout
    good = run("k8s", "check", "--manifests", "-", stdin=text)
    assert good.returncode == 0, good.stderr
    edited = text.replace("egress: []", 'egress:\n      - to: [{ipBlock: {cidr: "0.0.0.0/0"}}]')
    assert edited != text
    bad = run("k8s", "check", "--manifests", "-", "--json", stdin=edited)
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert [e["field"] for e in report["errors"]] == ["spec.networkPolicy.egress"]
