"""The SandboxClaim `session --k8s-claim POOL --dry-run` prints, against
the real agent-sandbox v0.5.6 SandboxClaim CRD made strict (as
test_schema.py does for the template and the pool), and the YAML form
read back by an independent reader. No cluster is needed; the negative
controls show the strict schema is what catches an unknown field."""

from __future__ import annotations

import copy
import json
from typing import Any, Dict

import pytest
import yaml

from test_schema import ROOT, crd_errors, run

CLAIM_CRD = "extensions.agents.x-k8s.io_sandboxclaims.yaml"
DRY_RUN = ["session", "--k8s-claim", "rlm-sandbox", "--namespace", "rlm", "--dry-run"]

Obj = Dict[str, Any]


@pytest.fixture(scope="module")
def plan() -> Obj:
    out = run(*DRY_RUN, "--json")
    assert out.returncode == 0, out.stderr
    result: Obj = json.loads(out.stdout)
    return result


def test_the_claim_validates_against_the_strict_crd(plan: Obj) -> None:
    claim = plan["claim"]
    assert claim["kind"] == "SandboxClaim"
    assert claim["spec"] == {"warmPoolRef": {"name": "rlm-sandbox"}}
    assert crd_errors(claim, CLAIM_CRD) == []


def test_an_unknown_claim_field_fails_only_the_strict_crd(plan: Obj) -> None:
    broken = copy.deepcopy(plan["claim"])
    broken["spec"]["warmPoolRef"]["namespace"] = "other"
    assert any("Additional properties" in e for e in crd_errors(broken, CLAIM_CRD))
    assert crd_errors(broken, CLAIM_CRD, strict=False) == [], "control: the shipped CRD allows it"


def test_a_claim_without_its_pool_fails(plan: Obj) -> None:
    broken = copy.deepcopy(plan["claim"])
    del broken["spec"]["warmPoolRef"]
    assert crd_errors(broken, CLAIM_CRD)


def test_the_yaml_is_the_claim_and_the_steps_are_kubectl(plan: Obj) -> None:
    """`--dry-run | kubectl create -f -` reads the claim (the steps are
    comments); every step's argv is kubectl's."""
    out = run(*DRY_RUN)
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert len(docs) == 1
    # A fresh claim id per invocation: compare all but the id's fields.
    for doc in (docs[0], plan["claim"]):
        doc["metadata"]["labels"].pop("rlm-sandbox/claim-id")
        doc["metadata"]["labels"].pop("rlm-sandbox/pid")
        doc["metadata"]["labels"].pop("rlm-sandbox/pid-start")
        doc["metadata"].pop("name")
    assert docs[0] == plan["claim"]
    steps = [s["step"] for s in plan["steps"]]
    assert steps == ["create", "wait", "sandbox", "pod", "agent", "delete"]
    assert all(s["argv"][0] == "kubectl" for s in plan["steps"])
    assert json.loads(plan["steps"][0]["stdin"])["kind"] == "SandboxClaim"


def test_the_gc_fixture_claims_validate_against_the_strict_crd() -> None:
    """`gc --k8s` is tested over tests/fixtures/k8s/claims/list.json (no
    cluster here): its claims must have the shape the API server returns,
    status included, or the selection would be tested on invented data."""
    listed = json.loads((ROOT / "tests/fixtures/k8s/claims/list.json").read_text())
    assert len(listed["items"]) == 8
    for claim in listed["items"]:
        assert crd_errors(claim, CLAIM_CRD) == [], claim["metadata"]["name"]
    broken = copy.deepcopy(listed["items"][0])
    broken["status"]["sandbox"]["pod"] = "x"
    assert crd_errors(broken, CLAIM_CRD), "control: an unknown status field fails"


def test_the_claim_names_its_orchestrators_boot_and_start() -> None:
    """The labels `gc --k8s` reads: a reused pid has another start time.
    A fresh plan: the module's fixture has these labels popped above."""
    out = run(*DRY_RUN, "--json")
    assert out.returncode == 0, out.stderr
    labels = json.loads(out.stdout)["claim"]["metadata"]["labels"]
    assert labels["rlm-sandbox/pid-start"].isdigit()
    assert int(labels["rlm-sandbox/pid-start"]) > 0
    with open("/proc/sys/kernel/random/boot_id") as f:
        assert labels["rlm-sandbox/boot-id"] == f.read().strip()
