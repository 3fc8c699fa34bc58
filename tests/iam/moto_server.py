"""moto's server, run as its own process, naming the resource of every call it authorizes.

moto authorizes a request against the caller's identity policies once
``/moto-api/reset-auth`` has set the number of unauthenticated requests
(INITIAL_NO_AUTH_ACTION_COUNT). It names the resource of SQS, S3, IAM and
STS calls, but checks every other service's calls against the resource
"*", which no statement scoped to an ARN matches: a worker allowed to
publish to its topic would be refused. This launcher gives SNS, Secrets
Manager and Auto Scaling calls the ARN AWS authorizes them against (the
topic, the secret, the group), as it does for SQS's GetQueueUrl (the queue
it names). SQS's batch calls are authorized as their single calls (IAM has
no sqs:SendMessageBatch), where moto asks for a batch action. It writes each
authorization decision
(caller, action, resource, allowed) as one JSON line to the file named by
``IAM_DECISIONS``, so the tests can tell which calls the worker made.

Run: ``python -m tests.iam.moto_server PORT``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from moto.autoscaling.responses import AutoScalingResponse
from moto.iam.access_control import IAMRequestBase
from moto.secretsmanager.responses import SecretsManagerResponse
from moto.server import main
from moto.sns.responses import SNSResponse
from moto.sqs.responses import SQSResponse

_lock = threading.Lock()


def _sns_resource(self: Any) -> str:
    topic = self._get_param("TopicArn") or self._get_param("TargetArn")
    if not topic and self._get_param("SubscriptionArn"):
        # A subscription's ARN is its topic's plus an id.
        topic = str(self._get_param("SubscriptionArn")).rsplit(":", 1)[0]
    return str(topic or "*")


def _secret_resource(self: Any) -> str:
    secret = self.backend.secrets.get(self._get_param("SecretId") or "")
    return str(secret.arn) if secret is not None else "*"


def _group_resource(self: Any) -> str:
    name = self._get_param("AutoScalingGroupName") or ""
    group = self.autoscaling_backend.autoscaling_groups.get(name)
    return str(group.arn) if group is not None else "*"


def _queue_resource(original: Any) -> Any:
    def determine(self: Any) -> str:
        # GetQueueUrl names its queue by QueueName, which moto does not read.
        name = self._get_param("QueueName")
        if name and not self._get_param("QueueUrl"):
            queue = self.sqs_backend.queues.get(name)
            return str(queue.queue_arn) if queue is not None else "*"
        return str(original(self))

    return determine


def _recording(check: Any) -> Any:
    path = os.environ.get("IAM_DECISIONS", "")

    def check_action_permitted(self: Any, resource: str) -> None:
        # IAM has no batch actions: SQS authorizes a batch as its single call.
        if self._action.startswith("sqs:") and self._action.endswith("Batch"):
            self._action = self._action.removesuffix("Batch")
        allowed = False
        try:
            check(self, resource)
            allowed = True
        finally:
            if path:
                line = {
                    "caller": self._access_key.arn,
                    "action": self._action,
                    "resource": resource,
                    "allowed": allowed,
                }
                with _lock, open(path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(line) + "\n")

    return check_action_permitted


def patch() -> None:
    """Name the resources and record the decisions, in this process."""
    SNSResponse._determine_resource = _sns_resource  # type: ignore[attr-defined]
    SecretsManagerResponse._determine_resource = _secret_resource  # type: ignore[attr-defined]
    AutoScalingResponse._determine_resource = _group_resource  # type: ignore[attr-defined]
    SQSResponse._determine_resource = _queue_resource(SQSResponse._determine_resource)  # type: ignore[method-assign]
    IAMRequestBase.check_action_permitted = _recording(  # type: ignore[method-assign]
        IAMRequestBase.check_action_permitted
    )


if __name__ == "__main__":
    patch()
    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
