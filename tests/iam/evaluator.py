"""IAM policy evaluation by @cloud-copilot/iam-simulate, a maintained evaluator.

It decides a request (principal, action, resource, condition context) the
way AWS does: explicit denies, identity and resource policies, same-account
and cross-account rules (both sides must allow), every condition operator,
the trust rules of KMS key policies. moto cannot stand in for it: its
authorizer reads identity policies only, ignores every condition but
StringEquals on keys it was given, and never reads a key, bucket, queue or
topic policy.

The library runs under Node (tests/iam/policy_sim, installed by
``make setup``); one process evaluates a whole table at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIMULATOR = Path(__file__).resolve().parent / "policy_sim"
ALLOWED = "Allowed"


@dataclass(frozen=True)
class Request:
    """One request: who asks to do what to which resource, with which context."""

    principal: str
    action: str
    resource: str
    account: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)
    identity: Sequence[Mapping[str, Any]] = ()
    resource_policy: Mapping[str, Any] | None = None

    def simulation(self) -> dict[str, Any]:
        """iam-simulate's input for this request."""
        simulation: dict[str, Any] = {
            "request": {
                "principal": self.principal,
                "action": self.action,
                "resource": {"resource": self.resource, "accountId": self.account},
                "contextVariables": {"aws:SecureTransport": "true", **self.context},
            },
            "identityPolicies": [
                {"name": f"policy{i}", "policy": p} for i, p in enumerate(self.identity)
            ],
        }
        if self.resource_policy is not None:
            simulation["resourcePolicy"] = self.resource_policy
        return simulation


def ready() -> bool:
    """Whether Node and the installed library are there."""
    return shutil.which("node") is not None and (SIMULATOR / "node_modules").is_dir()


def evaluate(requests: Sequence[Request]) -> list[str]:
    """Each request's result: ``Allowed``, ``ImplicitlyDenied`` or ``ExplicitlyDenied``."""
    if not ready():
        raise RuntimeError(
            "the policy evaluator is not installed: run `make setup` (needs node and npm)"
        )
    result = subprocess.run(
        ["node", str(SIMULATOR / "simulate.js")],
        input=json.dumps([r.simulation() for r in requests]),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the policy evaluator failed: {result.stderr}")
    answers = result.stdout.splitlines()
    errors = [(r, a) for r, a in zip(requests, answers, strict=True) if a.startswith("Error")]
    if errors:
        raise ValueError(f"the evaluator refused some requests as malformed: {errors[:3]}")
    return answers
