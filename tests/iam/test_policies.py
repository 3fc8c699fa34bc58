"""The template's policies as rendered, decided by iam-simulate, row by row.

What moto cannot decide is decided here: conditions (kms:ViaService,
s3:prefix, sns:Protocol, resource tags), the key, bucket, queue and topic
policies, and cross-account requests, for which both the caller's account
and the resource's policy must allow. Each row is (principal, action,
resource, condition context) and the answer expected.

iam-simulate 0.1.173 drops request keys of the form
``kms:EncryptionContext:<key>`` (it matches variable keys on "/" only), so
every condition on such a key would fail. Those conditions are taken out of
the documents before evaluation (:func:`_split_encryption_context`) and
checked on their own, against the ARNs SQS and Secrets Manager put in the
encryption context (:func:`test_encryption_context_conditions`).
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

import pytest

from tests.iam.evaluator import ALLOWED, Request, evaluate
from tests.iam.grants import VIA_SQS, Call, Names, worker_calls, worker_denied
from tests.infra.cfn import ACCOUNT, REGION, STACK, Resolved, load_template

PRODUCER_ACCOUNT = "222222222222"
PRODUCER = f"arn:aws:iam::{PRODUCER_ACCOUNT}:role/autobio-app"
STRANGER = "arn:aws:iam::999999999999:role/someone"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:illustrator-signing-AbCdEf"
TOKEN_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0b5c6d7e-token"
OPERATOR = f"arn:aws:sts::{ACCOUNT}:assumed-role/ops-admin/alice"
REPOSITORY = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/illustrator"
OWN_QUEUE = f"arn:aws:sqs:{REGION}:{PRODUCER_ACCOUNT}:autobio-events"
# AutoBio's account grants its role these services on anything; the stack's
# resource policies decide what it may do here.
PRODUCER_IDENTITY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": ["sqs:*", "s3:*", "sns:*", "kms:*"], "Resource": "*"}
    ],
}
DELEGATES_TO_IAM = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


ENCRYPTION_CONTEXT = "kms:encryptioncontext:"


def _split_encryption_context(policy: Any) -> tuple[Any, list[tuple[str, str, Any]]]:
    """`policy` without its encryption-context conditions, and those conditions
    as (Sid, operator, values)."""
    policy = copy.deepcopy(policy)
    taken = []
    for statement in policy["Statement"]:
        for operator, tests in list(statement.get("Condition", {}).items()):
            for key in [k for k in tests if k.lower().startswith(ENCRYPTION_CONTEXT)]:
                taken.append((statement.get("Sid", ""), operator, tests.pop(key)))
            if not tests:
                del statement["Condition"][operator]
    return policy, taken


class Rendered:
    """The template resolved with a producer in another account and a signing secret."""

    def __init__(self) -> None:
        self.r = Resolved(
            load_template(),
            {
                "ProducerPrincipalArn": PRODUCER,
                "AuthTokenSecretArn": SECRET,
                "AuthTokenKeyArn": TOKEN_KEY,
                "EcrRepositoryArn": REPOSITORY,
            },
        )
        self.names = Names.of_template(self.r, SECRET, TOKEN_KEY)
        role = self.r.resource("WorkerRole")
        documents = [p["PolicyDocument"] for p in role["Policies"]]
        documents.append(self.r.resource("AuthTokenPolicy")["PolicyDocument"])
        documents.append(self.r.resource("EcrPullPolicy")["PolicyDocument"])
        self.worker_policies = [_split_encryption_context(d)[0] for d in documents]
        self.worker_role = self.r.attribute("WorkerRole", "Arn")
        self.worker = (
            self.worker_role.replace(":iam::", ":sts::").replace(":role/", ":assumed-role/")
            + "/i-0abc"
        )
        self.operator_policy = self.r.resource("OperatorPolicy")["PolicyDocument"]
        n = self.names
        queues = self.r.resource("QueuesPolicy")["PolicyDocument"]
        self.resource_policies: dict[str, Any] = {
            n.queue: queues,
            n.priority: queues,
            n.dlq: queues,
            n.priority_dlq: queues,
            n.events: self.r.resource("EventsQueuePolicy")["PolicyDocument"],
            n.topic: self.r.resource("CompletionTopicPolicy")["PolicyDocument"],
            n.bucket: self.r.resource("BucketPolicy")["PolicyDocument"],
            n.key: _split_encryption_context(self.r.resource("Key")["KeyPolicy"])[0],
            n.token_key: DELEGATES_TO_IAM,
        }

    def policy_of(self, resource: str) -> Any:
        """The resource policy guarding `resource` (objects: their bucket's)."""
        for arn, policy in self.resource_policies.items():
            if resource == arn or resource.startswith(arn + "/"):
                return policy
        return None

    def request(
        self, principal: str, call: Call, identity: list[dict[str, Any]], account: str = ACCOUNT
    ) -> Request:
        context = {
            k: v for k, v in call.context.items() if not k.lower().startswith(ENCRYPTION_CONTEXT)
        }
        return Request(
            principal,
            call.action,
            call.resource,
            account,
            context,
            identity,
            self.policy_of(call.resource),
        )


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return Rendered()


def _decide(
    rendered: Rendered, principal: str, calls: list[Call], identity: list[dict[str, Any]]
) -> list[tuple[str, str, str]]:
    answers = evaluate([rendered.request(principal, c, identity) for c in calls])
    return [(c.action, c.resource, a) for c, a in zip(calls, answers, strict=True)]


def _worker_calls(rendered: Rendered) -> list[Call]:
    """The worker's calls, with the host's image pull (EcrRepositoryArn set)."""
    pulls = [
        Call(action, REPOSITORY, why="docker pull")
        for action in (
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
            "ecr:BatchCheckLayerAvailability",
        )
    ]
    return [*worker_calls(rendered.names, STACK), Call("ecr:GetAuthorizationToken", "*"), *pulls]


def test_every_call_of_the_worker_is_allowed(rendered: Rendered) -> None:
    calls = _worker_calls(rendered)
    decided = _decide(rendered, rendered.worker, calls, rendered.worker_policies)
    assert [d for d in decided if d[2] != ALLOWED] == []


def test_what_the_worker_must_not_do_is_denied(rendered: Rendered) -> None:
    calls = worker_denied(rendered.names, STACK)
    decided = _decide(rendered, rendered.worker, calls, rendered.worker_policies)
    assert [d for d in decided if d[2] == ALLOWED] == []


def _statements(rendered: Rendered) -> list[tuple[int, int, str]]:
    return [
        (p, s, statement.get("Sid", f"#{s}"))
        for p, policy in enumerate(rendered.worker_policies)
        for s, statement in enumerate(policy["Statement"])
    ]


WORKER_STATEMENTS = [sid for _, _, sid in _statements(Rendered())]


@pytest.mark.parametrize("sid", WORKER_STATEMENTS)
def test_each_statement_of_the_worker_role_is_needed(rendered: Rendered, sid: str) -> None:
    """Deleting any one statement makes a call the worker makes fail."""
    [(p, s)] = [(p, s) for p, s, name in _statements(rendered) if name == sid]
    policies = copy.deepcopy(rendered.worker_policies)
    del policies[p]["Statement"][s]
    calls = _worker_calls(rendered)
    decided = _decide(rendered, rendered.worker, calls, policies)
    lost = [d for d in decided if d[2] != ALLOWED]
    assert lost, f"without {sid} the worker can still make every call"


def test_the_worker_role_is_for_ec2_instances_only(rendered: Rendered) -> None:
    trust = rendered.r.resource("WorkerRole")["AssumeRolePolicyDocument"]
    role = rendered.worker_role
    ec2 = Request("ec2.amazonaws.com", "sts:AssumeRole", role, ACCOUNT, {}, [], trust)
    person = Request(OPERATOR, "sts:AssumeRole", role, ACCOUNT, {}, [PRODUCER_IDENTITY], trust)
    assert evaluate([ec2, person]) == [ALLOWED, "ImplicitlyDenied"]


# ------------------------------------------------------------- the producer


def producer_rows(n: Names) -> list[tuple[Call, bool]]:
    """(call by AutoBio's role in its own account, allowed?)"""
    bucket = n.bucket
    request_context = {
        **VIA_SQS,
        "kms:EncryptionContext:aws:sqs:arn": n.queue,
    }
    return [
        (Call("sqs:SendMessage", n.queue), True),
        (Call("sqs:SendMessage", n.priority), True),
        (Call("sqs:GetQueueUrl", n.queue), True),
        (Call("sqs:GetQueueAttributes", n.priority), True),
        (Call("kms:GenerateDataKey", n.key, request_context), True),
        (
            Call(
                "kms:Decrypt",
                n.key,
                {**request_context, "kms:EncryptionContext:aws:sqs:arn": n.priority},
            ),
            True,
        ),
        (Call("s3:PutObject", f"{bucket}/avatars/u1.png"), True),
        (Call("s3:PutObject", f"{bucket}/subjects/u1/2024.jpg"), True),
        (Call("s3:PutObject", f"{bucket}/cancellations/u1/job-1"), True),
        (Call("s3:GetObject", f"{bucket}/generated/u1/memory_job-1.png"), True),
        (Call("sns:Subscribe", n.topic, {"sns:Protocol": "sqs", "sns:Endpoint": OWN_QUEUE}), True),
        (
            Call(
                "sns:Subscribe",
                n.topic,
                {
                    "sns:Protocol": "lambda",
                    "sns:Endpoint": f"arn:aws:lambda:{REGION}:{PRODUCER_ACCOUNT}:function:f",
                },
            ),
            True,
        ),
        # Never the consumer's side, nor anything beyond the producer's.
        (Call("sqs:ReceiveMessage", n.queue), False),
        (Call("sqs:DeleteMessage", n.queue), False),
        (Call("sqs:PurgeQueue", n.queue), False),
        (Call("sqs:SendMessage", n.dlq), False),
        (Call("sqs:ReceiveMessage", n.dlq), False),
        (Call("sqs:ReceiveMessage", n.events), False),
        (Call("s3:GetObject", f"{bucket}/avatars/u2.png"), False),
        (Call("s3:PutObject", f"{bucket}/generated/u1/memory_job-1.png"), False),
        (Call("s3:PutObject", f"{bucket}/models/sdxl/unet/x.bin"), False),
        (Call("s3:DeleteObject", f"{bucket}/avatars/u1.png"), False),
        (Call("s3:ListBucket", bucket, {"s3:prefix": "avatars/"}), False),
        (Call("sns:Publish", n.topic), False),
        (Call("kms:Decrypt", n.key), False),
        # Through another queue of the stack: see test_encryption_context_conditions.
        (
            Call(
                "sns:Subscribe",
                n.topic,
                {"sns:Protocol": "sqs", "sns:Endpoint": f"arn:aws:sqs:{REGION}:999999999999:q"},
            ),
            False,
        ),
        (
            Call(
                "sns:Subscribe", n.topic, {"sns:Protocol": "email", "sns:Endpoint": "a@b.example"}
            ),
            False,
        ),
        (
            Call(
                "sns:Subscribe",
                n.topic,
                {"sns:Protocol": "https", "sns:Endpoint": "https://x.example/h"},
            ),
            False,
        ),
    ]


def test_the_producer_in_another_account_gets_exactly_its_rows(rendered: Rendered) -> None:
    rows = producer_rows(rendered.names)
    answers = evaluate(
        [rendered.request(PRODUCER, call, [PRODUCER_IDENTITY], ACCOUNT) for call, _ in rows]
    )
    wrong = [
        (call.action, call.resource, call.context, answer)
        for (call, allowed), answer in zip(rows, answers, strict=True)
        if (answer == ALLOWED) != allowed
    ]
    assert wrong == []


def test_a_stranger_gets_nothing(rendered: Rendered) -> None:
    rows = producer_rows(rendered.names)
    answers = evaluate(
        [rendered.request(STRANGER, call, [PRODUCER_IDENTITY], ACCOUNT) for call, _ in rows]
    )
    assert ALLOWED not in answers


def test_nobody_subscribes_by_mail_or_http_even_in_this_account(rendered: Rendered) -> None:
    n = rendered.names
    admin = [PRODUCER_IDENTITY]
    rows = [
        Call("sns:Subscribe", n.topic, {"sns:Protocol": protocol, "sns:Endpoint": endpoint})
        for protocol, endpoint in (
            ("email", "a@b.example"),
            ("https", "https://x.example/h"),
            ("sms", "+15550100"),
        )
    ]
    rows.append(Call("sns:Subscribe", n.topic, {"sns:Protocol": "sqs", "sns:Endpoint": n.events}))
    answers = evaluate([rendered.request(OPERATOR, c, admin) for c in rows])
    assert answers == ["ExplicitlyDenied"] * 3 + [ALLOWED]


def test_plain_http_is_refused_even_to_the_producer(rendered: Rendered) -> None:
    plain = {"aws:SecureTransport": "false"}
    rows = [call for call, allowed in producer_rows(rendered.names) if allowed]
    rows = [c for c in rows if not c.action.startswith("kms:")]
    requests = [
        rendered.request(
            PRODUCER, Call(c.action, c.resource, {**c.context, **plain}), [PRODUCER_IDENTITY]
        )
        for c in rows
    ]
    assert set(evaluate(requests)) == {"ExplicitlyDenied"}


# ------------------------------------------------------------- the operator


def operator_rows(n: Names) -> list[tuple[Call, bool]]:
    """(call by a person whose role has OperatorPolicy, allowed?)"""
    bucket = n.bucket
    wait_queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:illustrator-wait-0a1b2c"
    allowed = [
        Call("sqs:SendMessage", n.queue),
        Call("sqs:SendMessage", n.priority),
        Call("sqs:GetQueueAttributes", n.queue),
        Call("sqs:GetQueueUrl", n.dlq),
        Call("kms:GenerateDataKey", n.key, VIA_SQS),
        Call("kms:Decrypt", n.key, VIA_SQS),
        *(
            Call(action, dlq)
            for dlq in (n.dlq, n.priority_dlq)
            for action in (
                "sqs:ReceiveMessage",
                "sqs:ChangeMessageVisibility",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:PurgeQueue",
                "sqs:StartMessageMoveTask",
                "sqs:ListMessageMoveTasks",
                "sqs:CancelMessageMoveTask",
            )
        ),
        *(
            Call(action, wait_queue)
            for action in (
                "sqs:CreateQueue",
                "sqs:TagQueue",
                "sqs:SetQueueAttributes",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:DeleteQueue",
            )
        ),
        Call("sns:Subscribe", n.topic, {"sns:Protocol": "sqs", "sns:Endpoint": wait_queue}),
        Call("sns:Unsubscribe", n.topic),
        Call("s3:PutObject", f"{bucket}/avatars/u1.png"),
        Call("s3:PutObject", f"{bucket}/cancellations/u1/job-1"),
        Call("s3:GetObject", f"{bucket}/generated/u1/memory_job-1.png"),
    ]
    denied = [
        Call("sqs:PurgeQueue", n.queue),
        Call("sqs:ReceiveMessage", n.queue),
        Call("sqs:DeleteMessage", n.priority),
        Call("sqs:DeleteQueue", n.queue),
        Call("sqs:SetQueueAttributes", n.dlq),
        Call("sqs:CreateQueue", f"arn:aws:sqs:{REGION}:{ACCOUNT}:anything"),
        Call("s3:PutObject", f"{bucket}/generated/u1/memory_job-1.png"),
        Call("s3:PutObject", f"{bucket}/models/sdxl/unet/x.bin"),
        Call("s3:GetObject", f"{bucket}/avatars/u1.png"),
        Call("s3:DeleteObject", f"{bucket}/avatars/u1.png"),
        Call("sns:Publish", n.topic),
        Call("sns:Subscribe", n.topic, {"sns:Protocol": "email", "sns:Endpoint": "a@b.example"}),
        Call("kms:Decrypt", n.key),
        Call("secretsmanager:GetSecretValue", n.secret),
    ]
    return [(c, True) for c in allowed] + [(c, False) for c in denied]


def test_the_operator_policy_grants_exactly_the_commands(rendered: Rendered) -> None:
    rows = operator_rows(rendered.names)
    answers = evaluate(
        [rendered.request(OPERATOR, call, [rendered.operator_policy]) for call, _ in rows]
    )
    wrong = [
        (call.action, call.resource, answer)
        for (call, allowed), answer in zip(rows, answers, strict=True)
        if (answer == ALLOWED) != allowed
    ]
    assert wrong == []


OPERATOR_STATEMENTS = [s["Sid"] for s in Rendered().operator_policy["Statement"]]


@pytest.mark.parametrize("sid", OPERATOR_STATEMENTS)
def test_each_statement_of_the_operator_policy_is_needed(rendered: Rendered, sid: str) -> None:
    policy = copy.deepcopy(rendered.operator_policy)
    policy["Statement"] = [s for s in policy["Statement"] if s["Sid"] != sid]
    rows = [call for call, allowed in operator_rows(rendered.names) if allowed]
    answers = evaluate([rendered.request(OPERATOR, call, [policy]) for call in rows])
    assert any(a != ALLOWED for a in answers), f"without {sid} every command still works"


def test_encryption_context_conditions(rendered: Rendered) -> None:
    """The producer's key grant serves the two request queues only; the
    worker's grant on the token's key serves the token secret only."""
    n = rendered.names
    _, producer = _split_encryption_context(rendered.r.resource("Key")["KeyPolicy"])
    [(operator, patterns)] = [(o, v) for sid, o, v in producer if sid == "ProducerEncryptsRequests"]
    assert operator == "StringLike"
    for arn, allowed in (
        (n.queue, True),
        (n.priority, True),
        (n.dlq, False),
        (n.priority_dlq, False),
        (n.events, False),
        (f"arn:aws:sqs:{REGION}:{ACCOUNT}:other-RequestQueue-X", False),
    ):
        assert any(fnmatch.fnmatchcase(arn, p) for p in patterns) is allowed, arn
    _, token = _split_encryption_context(rendered.r.resource("AuthTokenPolicy")["PolicyDocument"])
    assert token == [("DecryptAuthToken", "StringEquals", SECRET)]
