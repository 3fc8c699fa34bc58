"""Who may do what to the stack's key, queues, bucket and topic.

The four resource policies of infra/illustrator.yaml are resolved with
AutoBio's role in another account as ProducerPrincipalArn, then checked
statement by statement: every action AutoBio needs (as producer of requests
and subscriber to events) is granted to it by the resource's policy, each
statement that names it grants only such actions, and no other principal
gains anything. The worker's grants live in its own role (test_template.py).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tests.infra.cfn import ACCOUNT, REGION, Resolved, allows, load_template, principals
from tests.infra.test_template import Deployed

PRODUCER_ACCOUNT = "222222222222"
PRODUCER = f"arn:aws:iam::{PRODUCER_ACCOUNT}:role/autobio-app"
STRANGER = "arn:aws:iam::999999999999:role/someone"
OWN_QUEUE = f"arn:aws:sqs:{REGION}:{PRODUCER_ACCOUNT}:autobio-illustrations"
VIA_SQS = {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}
SUBSCRIBE_OWN = {"sns:Protocol": "sqs", "sns:Endpoint": OWN_QUEUE}


class Stack:
    """The resolved policies and the ARNs of what they guard."""

    def __init__(self, producer: str) -> None:
        self.r = Resolved(load_template(), {"ProducerPrincipalArn": producer})
        self.key = self.r.attribute("Key", "Arn")
        self.queues = {q: self.r.attribute(q, "Arn") for q in self._queues()}
        self.bucket = self.r.attribute("Bucket", "Arn")
        self.topic = self.r.physical("CompletionTopic")
        self.worker = self.r.attribute("WorkerRole", "Arn")
        self.policies: dict[str, dict[str, Any]] = {
            "key": self.r.resource("Key")["KeyPolicy"],
            "queues": self.r.resource("QueuesPolicy")["PolicyDocument"],
            "bucket": self.r.resource("BucketPolicy")["PolicyDocument"],
            "topic": self.r.resource("CompletionTopicPolicy")["PolicyDocument"],
        }

    def _queues(self) -> list[str]:
        return ["RequestQueue", "PriorityQueue", "DeadLetterQueue", "PriorityDeadLetterQueue"]

    def needs(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """(policy, action, resource, context) for everything AutoBio does."""
        needed = [
            ("key", "kms:GenerateDataKey", self.key, VIA_SQS),
            ("key", "kms:Decrypt", self.key, VIA_SQS),
        ]
        for queue in ("RequestQueue", "PriorityQueue"):
            for action in ("sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"):
                needed.append(("queues", action, self.queues[queue], {}))
        for key in ("avatars/u1.png", "subjects/u1/2024.jpg", "cancellations/u1/job-1"):
            needed.append(("bucket", "s3:PutObject", f"{self.bucket}/{key}", {}))
        needed.append(("bucket", "s3:GetObject", f"{self.bucket}/generated/u1/memory_j.png", {}))
        needed.append(("topic", "sns:Subscribe", self.topic, SUBSCRIBE_OWN))
        return needed

    def everything(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """A catalogue of requests against each guarded resource, needed or not."""
        objects = [
            f"{self.bucket}/{k}"
            for k in (
                "avatars/u1.png",
                "subjects/u1/2024.jpg",
                "cancellations/u1/job-1",
                "generated/u1/memory_j.png",
                "models/sdxl/unet/config.json",
                "elsewhere/x",
            )
        ]
        requests = []
        for action in ("kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant", "kms:PutKeyPolicy"):
            for context in ({}, VIA_SQS):
                requests.append(("key", action, self.key, context))
        sqs_actions = (
            "sqs:SendMessage",
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:PurgeQueue",
            "sqs:SetQueueAttributes",
            "sqs:GetQueueAttributes",
            "sqs:ChangeMessageVisibility",
        )
        for queue, action in itertools.product(self.queues.values(), sqs_actions):
            requests.append(("queues", action, queue, {}))
        s3_actions = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:PutObjectAcl")
        for key, action in itertools.product(objects, s3_actions):
            requests.append(("bucket", action, key, {}))
        requests.append(("bucket", "s3:ListBucket", self.bucket, {}))
        requests.append(("bucket", "s3:PutBucketPolicy", self.bucket, {}))
        subscriptions = (
            SUBSCRIBE_OWN,
            {"sns:Protocol": "sqs", "sns:Endpoint": f"arn:aws:sqs:{REGION}:999999999999:q"},
            {"sns:Protocol": "email", "sns:Endpoint": "someone@example.com"},
            {"sns:Protocol": "https", "sns:Endpoint": "https://example.com/hook"},
        )
        for context in subscriptions:
            requests.append(("topic", "sns:Subscribe", self.topic, context))
        for action in ("sns:Publish", "sns:SetTopicAttributes", "sns:AddPermission"):
            requests.append(("topic", action, self.topic, {}))
        return requests


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(PRODUCER)


def test_every_action_autobio_needs_is_granted_by_the_resource_policies(stack: Stack) -> None:
    for policy, action, resource, context in stack.needs():
        assert allows(stack.policies[policy], f"AWS:{PRODUCER}", action, resource, context), (
            policy,
            action,
            resource,
        )


def test_autobio_gains_nothing_else(stack: Stack) -> None:
    needed = {(p, a, r, tuple(sorted(c.items()))) for p, a, r, c in stack.needs()}
    extra = [
        (p, a, r, c)
        for p, a, r, c in stack.everything()
        if (p, a, r, tuple(sorted(c.items()))) not in needed
        and allows(stack.policies[p], f"AWS:{PRODUCER}", a, r, c)
    ]
    assert extra == []


def test_each_statement_naming_autobio_grants_only_what_it_needs(stack: Stack) -> None:
    needed_actions = {(p, a) for p, a, _, _ in stack.needs()}
    naming = 0
    for name, policy in stack.policies.items():
        for statement in policy["Statement"]:
            if f"AWS:{PRODUCER}" not in principals(statement):
                continue
            naming += 1
            assert statement["Effect"] == "Allow"
            actions = statement["Action"]
            for action in actions if isinstance(actions, list) else [actions]:
                assert (name, action) in needed_actions, (statement["Sid"], action)
    # One for the key, the queues and the topic, two for the bucket.
    assert naming == 5


def test_no_other_principal_gains_anything(stack: Stack) -> None:
    granted = [
        (p, a, r)
        for p, a, r, c in stack.everything()
        if allows(stack.policies[p], f"AWS:{STRANGER}", a, r, c)
    ]
    assert granted == []
    # The statements' principals: this account (administers the key and may
    # subscribe through IAM), AWS services bound to this stack by condition,
    # the workers' role, AutoBio, and "*" only in Deny statements.
    allowed = {
        f"AWS:arn:aws:iam::{ACCOUNT}:root",
        f"AWS:{stack.worker}",
        f"AWS:{PRODUCER}",
        "Service:sns.amazonaws.com",
        f"Service:logs.{REGION}.amazonaws.com",
    }
    for policy in stack.policies.values():
        for statement in policy["Statement"]:
            if statement["Effect"] == "Deny":
                continue
            assert set(principals(statement)) <= allowed, statement["Sid"]
            if any(p.startswith("Service:") for p in principals(statement)):
                assert "Condition" in statement, statement["Sid"]


def test_aws_services_act_only_for_this_stack(stack: Stack) -> None:
    sns = "Service:sns.amazonaws.com"
    ours = {"aws:SourceArn": stack.topic}
    other = {"aws:SourceArn": f"arn:aws:sns:{REGION}:999999999999:elsewhere"}
    assert allows(stack.policies["key"], sns, "kms:GenerateDataKey", stack.key, ours)
    assert not allows(stack.policies["key"], sns, "kms:GenerateDataKey", stack.key, other)
    assert not allows(stack.policies["key"], sns, "kms:Decrypt", stack.key, {})


def test_without_a_producer_only_this_account_is_named() -> None:
    alone = Stack("")
    granted = [
        (p, a, r)
        for p, a, r, c in alone.everything()
        if allows(alone.policies[p], f"AWS:{PRODUCER}", a, r, c)
    ]
    assert granted == []
    for policy in alone.policies.values():
        for statement in policy["Statement"]:
            assert f"AWS:{PRODUCER}" not in principals(statement)


def test_plain_http_is_refused_even_to_autobio(stack: Stack) -> None:
    plain = {"aws:SecureTransport": "false"}
    for policy, action, resource, context in stack.needs():
        if policy == "key":
            continue  # KMS is reached through SQS, which enforces TLS itself.
        assert not allows(
            stack.policies[policy], f"AWS:{PRODUCER}", action, resource, {**context, **plain}
        ), (policy, action)


def test_a_stack_for_autobio_in_another_account_deploys(moto_endpoint: str) -> None:
    stack = Deployed(moto_endpoint)
    stack.create(ProducerPrincipalArn=PRODUCER)
    key = stack.physical("Key")
    raw = stack.client("kms").get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    # moto may hand back a key policy from CloudFormation as the object itself.
    policy = raw if isinstance(raw, dict) else json.loads(raw)
    [grant] = [s for s in policy["Statement"] if s.get("Sid") == "ProducerEncryptsRequests"]
    assert grant["Principal"] == {"AWS": PRODUCER}
    assert grant["Condition"] == {"StringEquals": {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}}
