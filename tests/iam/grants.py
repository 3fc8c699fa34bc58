"""Every AWS call the worker's role must be allowed, and calls it must not be.

Each row is one request as IAM sees it: action, a concrete resource, the
condition keys AWS adds to it, and the pattern of resources the row stands
for (what moto reports for the same call). The worker's rows come from its
code (consumer/aws, consumer/delivery, consumer/service/lifecycle.py) and
the boot scripts (infra/watchdog.sh, the awslogs driver); the layer checks
that every call the running worker made falls under one of them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from tests.iam.stack import ACCOUNT, REGION, IamStack
from tests.infra.cfn import ACCOUNT as CFN_ACCOUNT
from tests.infra.cfn import STACK, Resolved


@dataclass(frozen=True)
class Call:
    """One request: `action` on `resource` (standing for `pattern`) with `context`."""

    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    pattern: str = ""
    why: str = ""

    def covers(self, action: str, resource: str) -> bool:
        """Whether a call moto saw is one of this row's."""
        return action.lower() == self.action.lower() and fnmatch.fnmatchcase(
            resource, self.pattern or self.resource
        )


VIA_SQS = {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}
VIA_SNS = {"kms:ViaService": f"sns.{REGION}.amazonaws.com"}


@dataclass(frozen=True)
class Names:
    """The deployed stack's ARNs."""

    queue: str
    priority: str
    dlq: str
    priority_dlq: str
    events: str
    topic: str
    bucket: str
    key: str
    secret: str
    token_key: str
    group: str
    logs: str

    @classmethod
    def of(cls, stack: IamStack) -> Names:
        return cls(
            queue=stack.queue_arn("RequestQueueUrl"),
            priority=stack.queue_arn("PriorityQueueUrl"),
            dlq=stack.queue_arn("DeadLetterQueueUrl"),
            priority_dlq=stack.queue_arn("PriorityDeadLetterQueueUrl"),
            events=stack.queue_arn("EventsQueueUrl"),
            topic=stack.outputs["CompletionTopicArn"],
            bucket=f"arn:aws:s3:::{stack.outputs['BucketName']}",
            key=f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{stack.physical['Key']}",
            secret=stack.secret_arn,
            token_key=stack.token_key["Arn"],
            group=(
                f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:"
                f"0f2a7c1e-0000-4000-8000-000000000000:autoScalingGroupName/{stack.name}-workers"
            ),
            logs=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/illustrator/{stack.name}:"
            f"log-stream:i-0abc-gpu0",
        )

    @classmethod
    def of_template(cls, r: Resolved, secret: str, token_key: str) -> Names:
        """The names the template's tests resolve it with (tests/infra/cfn.py)."""
        return cls(
            queue=r.attribute("RequestQueue", "Arn"),
            priority=r.attribute("PriorityQueue", "Arn"),
            dlq=r.attribute("DeadLetterQueue", "Arn"),
            priority_dlq=r.attribute("PriorityDeadLetterQueue", "Arn"),
            events=r.attribute("EventsQueue", "Arn"),
            topic=r.physical("CompletionTopic"),
            bucket=r.attribute("Bucket", "Arn"),
            key=r.attribute("Key", "Arn"),
            secret=secret,
            token_key=token_key,
            group=(
                f"arn:aws:autoscaling:{REGION}:{CFN_ACCOUNT}:autoScalingGroup:"
                f"0f2a7c1e-0000-4000-8000-000000000000:autoScalingGroupName/{STACK}-workers"
            ),
            logs=f"arn:aws:logs:{REGION}:{CFN_ACCOUNT}:log-group:/illustrator/{STACK}:"
            "log-stream:i-0abc-gpu0",
        )


def worker_calls(n: Names, stack_name: str) -> list[Call]:
    """What the worker role must be allowed."""
    calls: list[Call] = []
    for queue in (n.queue, n.priority):
        for action in (
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:ChangeMessageVisibility",
            "sqs:GetQueueAttributes",
        ):
            calls.append(Call(action, queue, why="receive, heartbeat, release, delete"))
        calls.append(Call("sqs:SendMessage", queue, why="retry and release copies"))
    for dlq in (n.dlq, n.priority_dlq):
        calls.append(Call("sqs:SendMessage", dlq, why="dead-letter copy"))
        calls.append(Call("sqs:GetQueueUrl", dlq, why="the DLQ from the RedrivePolicy"))
        calls.append(Call("sqs:GetQueueAttributes", dlq, why="the DLQ from the RedrivePolicy"))
    calls.append(Call("sns:Publish", n.topic, why="completion events"))
    calls.append(Call("sns:GetTopicAttributes", n.topic, why="the SNS outage probe"))
    for prefix, why in (
        ("avatars/u1.png", "input"),
        ("subjects/u1/2024.jpg", "input"),
        ("cancellations/u1/job-1", "cancellation marker"),
        ("generated/u1/memory_job-1.png", "existing output (reuse)"),
        ("models/sdxl/unet/config.json", "artefact cache"),
    ):
        top = prefix.split("/", 1)[0]
        calls.append(
            Call("s3:GetObject", f"{n.bucket}/{prefix}", pattern=f"{n.bucket}/{top}/*", why=why)
        )
    calls.append(
        Call(
            "s3:PutObject",
            f"{n.bucket}/generated/u1/memory_job-1.png",
            pattern=f"{n.bucket}/generated/*",
            why="output",
        )
    )
    calls.append(
        Call("s3:ListBucket", n.bucket, {"s3:prefix": "models/sdxl/"}, why="artefact cache")
    )
    calls.append(Call("s3:GetBucketLocation", n.bucket, why="the S3 outage probe"))
    calls.append(Call("secretsmanager:GetSecretValue", n.secret, why="signing tokens"))
    secret_context = {
        "kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com",
        "kms:EncryptionContext:SecretARN": n.secret,
    }
    calls.append(Call("kms:Decrypt", n.token_key, secret_context, why="token secret's key"))
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        calls.append(Call(action, n.key, VIA_SQS, why="encrypted queues"))
        calls.append(Call(action, n.key, VIA_SNS, why="encrypted topic"))
    group_context = {"autoscaling:ResourceTag/aws:cloudformation:stack-name": stack_name}
    calls.append(
        Call(
            "autoscaling:CompleteLifecycleAction",
            n.group,
            pattern=n.group.replace("0f2a7c1e-0000-4000-8000-000000000000", "*"),
            why="drained before scale-in",
        )
    )
    calls.append(
        Call("autoscaling:RecordLifecycleActionHeartbeat", n.group, why="drain hook heartbeat")
    )
    calls.append(Call("autoscaling:SetInstanceHealth", n.group, group_context, why="watchdog.sh"))
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        calls.append(Call(action, n.logs, why="the awslogs driver"))
    return calls


def worker_denied(n: Names, stack_name: str) -> list[Call]:
    """What the worker role must not do."""
    return [
        Call("s3:PutObject", f"{n.bucket}/avatars/u1.png", why="write outside generated/"),
        Call("s3:PutObject", f"{n.bucket}/models/sdxl/unet/x.bin", why="change the model"),
        Call("s3:PutObject", f"{n.bucket}/cancellations/u1/j", why="cancel jobs"),
        Call("s3:DeleteObject", f"{n.bucket}/generated/u1/memory_j.png", why="delete outputs"),
        Call("s3:GetObject", f"{n.bucket}/elsewhere/x", why="read outside its prefixes"),
        Call("s3:ListBucket", n.bucket, {"s3:prefix": "avatars/"}, why="list users' inputs"),
        Call("s3:ListBucket", n.bucket, {"s3:prefix": ""}, why="list the bucket"),
        Call("sqs:ReceiveMessage", n.events, why="read another queue"),
        Call("sqs:SendMessage", n.events, why="send to another queue"),
        Call("sqs:ReceiveMessage", n.dlq, why="read the DLQ"),
        Call("sqs:PurgeQueue", n.queue, why="empty the request queue"),
        Call("sqs:SetQueueAttributes", n.queue, why="change the queue"),
        Call("sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:other-topic", why="other topic"),
        Call("sns:Subscribe", n.topic, {"sns:Protocol": "sqs"}, why="subscribe"),
        Call("secretsmanager:GetSecretValue", n.secret + "-other", why="another secret"),
        Call("kms:Decrypt", n.key, why="use the key directly"),
        Call("kms:Decrypt", n.key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}, why="via S3"),
        Call(
            "autoscaling:SetInstanceHealth",
            n.group.replace(f"/{stack_name}-workers", "/other-group"),
            {"autoscaling:ResourceTag/aws:cloudformation:stack-name": "other"},
            why="another group",
        ),
    ]
