"""infra/illustrator.yaml resolved for given parameters, and IAM-style policy
evaluation over the result, for the template's tests.

`Resolved` evaluates the intrinsic functions the template uses (Ref, GetAtt,
Sub, Join, If, Select, Split, Base64 and the condition functions) with made-up
physical ids, so policies and the user data can be read as AWS would see
them. `allows` decides one request (principal, action, resource, context keys)
against resource policies the way IAM does for the parts the template uses:
an explicit Deny wins, else any matching Allow; wildcards in actions and
resources; the condition operators StringEquals, StringLike, ArnEquals,
ArnLike and Bool (a key absent from the request fails its condition).
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "illustrator.yaml"
ACCOUNT = "111111111111"
REGION = "us-east-1"
STACK = "illustrator"
_NO_VALUE = object()


def load_template() -> dict[str, Any]:
    """The template as data, intrinsic functions kept as their dict form."""
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


@dataclass
class Resolved:
    """The template with `parameters` (over the defaults) and fake physical ids."""

    template: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {
            name: str(spec.get("Default", "")) for name, spec in self.template["Parameters"].items()
        }
        values.update(self.parameters)
        self.values: dict[str, Any] = {
            **values,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
            "AWS::NoValue": _NO_VALUE,
        }
        for name in self.template["Resources"]:
            self.values[name] = self.physical(name)
        # In order: a condition may name one defined before it.
        self.conditions: dict[str, bool] = {}
        for name, body in self.template["Conditions"].items():
            self.conditions[name] = bool(self.resolve(body))

    def physical(self, name: str) -> str:
        """What Ref gives for the resource `name`."""
        kind = self.template["Resources"][name]["Type"]
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{STACK}-{name}"
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-completions"
        if kind == "AWS::S3::Bucket":
            return f"{STACK}-bucket"
        return f"{STACK}-{name}"

    def attribute(self, name: str, attribute: str) -> str:
        """What GetAtt gives."""
        kind = self.template["Resources"][name]["Type"]
        if attribute == "Arn" and kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{STACK}-{name}"
        if attribute == "QueueName":
            return f"{STACK}-{name}"
        if attribute == "Arn" and kind == "AWS::S3::Bucket":
            return f"arn:aws:s3:::{STACK}-bucket"
        if attribute == "Arn" and kind == "AWS::KMS::Key":
            return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{STACK}-key"
        if attribute == "Arn" and kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{name}"
        return f"{STACK}-{name}-{attribute}"

    def resource(self, name: str) -> Any:
        """A resource's Properties, resolved."""
        return self.resolve(self.template["Resources"][name]["Properties"])

    def resolve(self, value: Any) -> Any:
        """`value` with every intrinsic function evaluated."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            [(key, arg)] = value.items()
            if key == "Ref":
                return self.values[arg]
            if key == "Condition":
                return self.conditions[arg]
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "If":
            condition, then, otherwise = arg
            return self.resolve(then if self.conditions[condition] else otherwise)
        if name == "GetAtt":
            target, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.attribute(target, attribute)
        if name == "Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            return self._sub(text, {k: self.resolve(v) for k, v in variables.items()})
        if name == "Join":
            separator, items = arg
            return separator.join(str(i) for i in self.resolve(items))
        if name == "Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        if name == "Split":
            separator, text = arg
            return str(self.resolve(text)).split(separator)
        if name == "Base64":
            return base64.b64encode(str(self.resolve(arg)).encode()).decode()
        return self._logic(name, arg)

    def _logic(self, name: str, arg: Any) -> bool:
        """The condition functions."""
        if name == "Equals":
            left, right = (self.resolve(a) for a in arg)
            return str(left) == str(right)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(a) for a in arg)
        if name == "Or":
            return any(self.resolve(a) for a in arg)
        raise NotImplementedError(name)

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return self.attribute(*name.split(".", 1))
            return str(self.values[name])

        return re.sub(r"\$\{([^}]+)\}", one, text)


# ------------------------------------------------------------------ policies


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def principals(statement: Mapping[str, Any]) -> list[str]:
    """The principals a statement names, as "AWS:<arn>" / "Service:<name>" / "*"."""
    principal = statement["Principal"]
    if principal == "*":
        return ["*"]
    return [f"{kind}:{name}" for kind, names in principal.items() for name in _listed(names)]


def _principal_matches(statement: Mapping[str, Any], principal: str) -> bool:
    named = principals(statement)
    if "*" in named or "AWS:*" in named:
        return True
    return principal in named


def _condition_holds(condition: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            if key not in context:
                return False
            actual = context[key]
            options = [str(w) for w in _listed(wanted)]
            if operator in ("StringEquals", "ArnEquals"):
                ok = actual in options
            elif operator in ("StringLike", "ArnLike"):
                ok = any(fnmatch.fnmatchcase(actual, o) for o in options)
            elif operator == "Bool":
                ok = actual.lower() in (o.lower() for o in options)
            else:
                raise NotImplementedError(operator)
            if not ok:
                return False
    return True


def _matches(
    statement: Mapping[str, Any],
    principal: str,
    action: str,
    resource: str,
    context: Mapping[str, str],
) -> bool:
    actions = [a.lower() for a in _listed(statement["Action"])]
    return (
        _principal_matches(statement, principal)
        and any(fnmatch.fnmatchcase(action.lower(), a) for a in actions)
        and any(fnmatch.fnmatchcase(resource, r) for r in _listed(statement["Resource"]))
        and _condition_holds(statement.get("Condition", {}), context)
    )


def allows(
    policy: Mapping[str, Any],
    principal: str,
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """Whether `policy` lets `principal` do `action` on `resource`."""
    request = {"aws:SecureTransport": "true", **(context or {})}
    statements = policy["Statement"]
    for statement in statements:
        if statement["Effect"] == "Deny" and _matches(
            statement, principal, action, resource, request
        ):
            return False
    return any(
        s["Effect"] == "Allow" and _matches(s, principal, action, resource, request)
        for s in statements
    )
