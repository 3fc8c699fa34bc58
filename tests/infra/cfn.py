"""infra/illustrator.yaml resolved for given parameters, for the template's tests.

`Resolved` evaluates the intrinsic functions the template uses (Ref, GetAtt,
Sub, Join, If, Select, Split, Base64 and the condition functions) with made-up
physical ids, so policies and the user data can be read as AWS would see
them. Policies are evaluated by tests/iam/evaluator.py (iam-simulate).
"""

from __future__ import annotations

import base64
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
# CloudFormation names a queue <stack>-<logical id>-<random suffix>.
QUEUE_SUFFIX = "1A2B3C4D5E6F"
# GetAtt Arn by resource type, from what names the resource (Resolved.arn_id).
ARNS = {
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{id}",
    "AWS::S3::Bucket": "arn:aws:s3:::{id}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{id}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{id}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{id}:*",
}
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
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{STACK}-{name}-{QUEUE_SUFFIX}"
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{STACK}-completions"
        if kind == "AWS::S3::Bucket":
            return f"{STACK}-bucket"
        return f"{STACK}-{name}"

    def attribute(self, name: str, attribute: str) -> str:
        """What GetAtt gives."""
        kind = self.template["Resources"][name]["Type"]
        if attribute == "Arn" and kind in ARNS:
            return ARNS[kind].format(
                region=self.values["AWS::Region"],
                account=self.values["AWS::AccountId"],
                id=self.arn_id(name),
            )
        if attribute == "QueueName":
            return f"{STACK}-{name}-{QUEUE_SUFFIX}"
        return f"{STACK}-{name}-{attribute}"

    def arn_id(self, name: str) -> str:
        """What names the resource `name` in its ARN (see :data:`ARNS`)."""
        kind = self.template["Resources"][name]["Type"]
        return {
            "AWS::SQS::Queue": f"{STACK}-{name}-{QUEUE_SUFFIX}",
            "AWS::S3::Bucket": f"{STACK}-bucket",
            "AWS::KMS::Key": f"{STACK}-key",
            "AWS::Logs::LogGroup": f"/illustrator/{STACK}",
        }.get(kind, f"{STACK}-{name}")

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
