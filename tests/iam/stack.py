"""infra/illustrator.yaml deployed into a moto server that enforces IAM, and
credentials taken from the template's own roles.

The server (:mod:`tests.iam.moto_server`) runs as a process of its own, so
enforcement never reaches the session's ordinary moto server. The stack is
created by an administrator user; the worker's credentials come from
assuming WorkerRole, the operator's from a role with OperatorPolicy attached,
the producer's from a role whose identity policy is the template's producer
grants. Roles are assumed before enforcement is switched on: moto's STS
cannot check a trust policy whose principal is a service (ec2.amazonaws.com),
so the trust policies are checked by the evaluator instead.
"""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.infra.cfn import Resolved, load_template
from tests.infra.test_template import Deployed

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"
PRODUCER_ROLE = "autobio-producer"
OPERATOR_ROLE = "illustrator-operator"
ADMIN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
TRUST_ACCOUNT = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole",
        }
    ],
}
TOKEN = "current-signing-token-7c1e"
OLD_TOKEN = "previous-signing-token-2b9d"


@dataclass(frozen=True)
class Credentials:
    """Temporary credentials of one assumed role (or the administrator's keys)."""

    key: str
    secret: str
    token: str = ""

    def environment(self) -> dict[str, str]:
        """The AWS chain's variables for these credentials."""
        env = {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        if self.token:
            env["AWS_SESSION_TOKEN"] = self.token
        return env


class IamServer:
    """The launcher's process on a free port of loopback."""

    def __init__(self, decisions: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.decisions = decisions
        env = {**os.environ, "IAM_DECISIONS": str(decisions), "PYTHONPATH": str(ROOT)}
        self.log = (decisions.parent / "moto-iam.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.iam.moto_server", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the IAM-enforcing moto server did not start"
                time.sleep(0.1)

    def enforce(self) -> None:
        """From now on every request is authorized against IAM."""
        requests.post(f"{self.url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        self.log.close()


class IamStack:
    """The deployed stack, its outputs, its policies as deployed, and the roles' credentials."""

    def __init__(self, server: IamServer) -> None:
        self.server = server
        self.endpoint = server.url
        iam = self._client("iam", Credentials("bootstrap", "bootstrap"))
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY)
        )
        keys = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = Credentials(keys["AccessKeyId"], keys["SecretAccessKey"])
        self.token_key = self.client("kms").create_key(Description="token secret")["KeyMetadata"]
        secrets = self.client("secretsmanager")
        secret = secrets.create_secret(
            Name="illustrator-signing", SecretString=OLD_TOKEN, KmsKeyId=self.token_key["Arn"]
        )
        # One rotation: AWSCURRENT is TOKEN and AWSPREVIOUS the old one.
        secrets.put_secret_value(SecretId=secret["ARN"], SecretString=TOKEN)
        self.secret_arn = secret["ARN"]
        self.producer_arn = self._role(PRODUCER_ROLE)
        self.operator_arn = self._role(OPERATOR_ROLE)
        self.parameters = {
            "ProducerPrincipalArn": self.producer_arn,
            "AuthTokenSecretArn": self.secret_arn,
            "AuthTokenKeyArn": self.token_key["Arn"],
        }
        deployed = Deployed(self.endpoint)
        deployed.client = self.client  # type: ignore[method-assign]
        # moto's CloudFormation cannot create an AWS::IAM::Policy written as
        # an object (AuthTokenPolicy): the stack is created without the token
        # secret, and that policy is put on the role below, as rendered.
        self.outputs = deployed.create()
        self.name = deployed.name
        self.physical = {k: str(v["PhysicalResourceId"]) for k, v in deployed.resources.items()}
        self.rendered = DeployedPolicies(self)
        self._fix_inline_policies()
        self._grant_roles()
        self._subscribe_events()
        self.worker = self.assume(self.physical["WorkerRole"])
        self.producer = self.assume(PRODUCER_ROLE)
        self.operator = self.assume(OPERATOR_ROLE)
        server.enforce()

    # Clients and credentials.

    def _client(self, service: str, credentials: Credentials) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.key,
            aws_secret_access_key=credentials.secret,
            aws_session_token=credentials.token or None,
        )

    def client(self, service: str, credentials: Credentials | None = None) -> Any:
        """A boto3 client on the server, as `credentials` (the administrator by default)."""
        return self._client(service, credentials or self.admin)

    def assume(self, role_name: str) -> Credentials:
        """Credentials of a session of the role `role_name`."""
        arn = self.client("iam").get_role(RoleName=role_name)["Role"]["Arn"]
        found = self.client("sts").assume_role(RoleArn=arn, RoleSessionName="iam-layer")
        c = found["Credentials"]
        return Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

    # Set-up.

    def _role(self, name: str) -> str:
        created = self.client("iam").create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST_ACCOUNT)
        )
        return str(created["Role"]["Arn"])

    def _fix_inline_policies(self) -> None:
        """moto's CloudFormation keeps a role's inline policies in a form its
        own authorizer cannot read; put each back, unchanged, as JSON, and
        add the token secret's policy as the template renders it."""
        iam = self.client("iam")
        role = self.physical["WorkerRole"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            if isinstance(document, str):
                document = ast.literal_eval(document)
            iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
        token = self.rendered.document("AuthTokenPolicy")
        iam.put_role_policy(
            RoleName=role,
            PolicyName=token["PolicyName"],
            PolicyDocument=json.dumps(token["PolicyDocument"]),
        )

    def _grant_roles(self) -> None:
        iam = self.client("iam")
        iam.attach_role_policy(RoleName=OPERATOR_ROLE, PolicyArn=self.outputs["OperatorPolicyArn"])
        iam.put_role_policy(
            RoleName=PRODUCER_ROLE,
            PolicyName="producer",
            PolicyDocument=json.dumps(self.rendered.producer_identity()),
        )

    def _subscribe_events(self) -> None:
        """moto's CloudFormation skips AWS::SNS::Subscription: subscribe the events queue."""
        queue_arn = self.queue_arn("EventsQueueUrl")
        self.client("sns").subscribe(
            TopicArn=self.outputs["CompletionTopicArn"],
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "true"},
        )

    def queue_arn(self, output: str) -> str:
        """The ARN of the queue whose URL is the output `output`."""
        name = self.outputs[output].rsplit("/", 1)[1]
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"

    def worker_environment(self) -> dict[str, str]:
        """The settings the user data writes, with the worker role's credentials."""
        return {
            **self.worker.environment(),
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "SQS_QUEUE_URL": self.outputs["RequestQueueUrl"],
            "SQS_DLQ_URL": self.outputs["DeadLetterQueueUrl"],
            "SQS_PRIORITY_QUEUE_URL": self.outputs["PriorityQueueUrl"],
            "SNS_TOPIC_ARN": self.outputs["CompletionTopicArn"],
            "S3_BUCKET_NAME": self.outputs["BucketName"],
            "AUTH_ENABLED": "true",
            "AUTH_TOKEN_SECRET_ID": self.secret_arn,
        }


class DeployedPolicies:
    """The template's policies resolved with the deployed stack's names."""

    def __init__(self, stack: IamStack) -> None:
        self.stack = stack
        self.resolved = _DeployedResolved(stack)

    def document(self, resource: str, *path: str | int) -> Any:
        """A resolved policy document: the resource's properties, then `path`."""
        value: Any = self.resolved.resource(resource)
        for step in path:
            value = value[step]
        return value

    def producer_identity(self) -> dict[str, Any]:
        """The producer's grants (from the key, queue, bucket and topic policies)
        as an identity policy: what AutoBio's account gives its own role."""
        statements = []
        for resource, path in (
            ("Key", ("KeyPolicy",)),
            ("QueuesPolicy", ("PolicyDocument",)),
            ("BucketPolicy", ("PolicyDocument",)),
            ("CompletionTopicPolicy", ("PolicyDocument",)),
        ):
            for statement in self.document(resource, *path)["Statement"]:
                if statement.get("Principal") == {"AWS": self.stack.producer_arn}:
                    own = {k: v for k, v in statement.items() if k != "Principal"}
                    if resource == "Key":
                        own["Resource"] = self.resolved.attribute("Key", "Arn")
                    statements.append(own)
        return {"Version": "2012-10-17", "Statement": statements}


class _DeployedResolved(Resolved):
    def __init__(self, stack: IamStack) -> None:
        self._stack = stack
        super().__init__(load_template(), stack.parameters)
        self.values.update({"AWS::AccountId": ACCOUNT, "AWS::StackName": stack.name})

    def physical(self, name: str) -> str:
        stack: IamStack = self._stack
        return stack.physical.get(name, f"{stack.name}-{name}")

    def arn_id(self, name: str) -> str:
        stack: IamStack = self._stack
        value = stack.physical.get(name, "")
        # Ref of a queue is its URL; its ARN names it by its last part.
        if self.template["Resources"][name]["Type"] == "AWS::SQS::Queue":
            return value.rsplit("/", 1)[1]
        return value
