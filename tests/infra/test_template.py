"""infra/illustrator.yaml: cfn-lint, checkov, and a deployment into moto's CloudFormation.

moto creates the queues, topic, bucket, key, log group, role, instance profile,
security group, launch template, Auto Scaling group and dashboard; it skips
(with a warning) the queue, topic and bucket policies, the subscription, the
scaling policies and the alarms, and applies only encryption and tags of a
bucket, so those parts are checked on the template itself.
"""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from tests.support.aws import FAKE_CREDENTIALS, REGION

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "illustrator.yaml"
BIN = Path(sys.executable).parent
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/illustrator:1.0.0"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The template as data, intrinsic functions kept as their dict form."""
    loaded: dict[str, Any] = cfn_yaml.load(str(TEMPLATE))
    return loaded


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    """The template's resources by logical id."""
    found: dict[str, Any] = template["Resources"]
    return found


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One checkov run over infra/ for the whole module (it takes seconds)."""
    result = subprocess.run(
        [
            *(str(BIN / "checkov"), "-d", "infra", "--framework", "cloudformation"),
            *("--skip-download", "--output", "json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_cfn_lint_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(TEMPLATE.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_no_failures(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"]["failed_checks"]
    assert [(c["check_id"], c["resource"]) for c in failed] == []
    assert checkov_report["summary"]["parsing_errors"] == 0
    assert checkov_report["summary"]["passed"] > 30


def test_every_checkov_skip_gives_its_reason(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"{check['check_id']} on {check['resource']} has no reason"
        assert reason != "No comment provided"
    assert {(c["check_id"], c["resource"]) for c in skipped} == {
        ("CKV_AWS_18", "AWS::S3::Bucket.Bucket")
    }


def test_termination_hook_waits_for_the_drain(resources: dict[str, Any]) -> None:
    group = resources["WorkerGroup"]["Properties"]
    hooks = group["LifecycleHookSpecificationList"]
    [hook] = [h for h in hooks if h["LifecycleTransition"].endswith("TERMINATING")]
    assert hook["DefaultResult"] == "CONTINUE"
    assert hook["HeartbeatTimeout"] == {"Ref": "DrainHookTimeoutSeconds"}
    user_data = json.dumps(resources["WorkerLaunchTemplate"]["Properties"])
    assert f"EC2_LIFECYCLE_HOOK_NAME={hook['LifecycleHookName']}" in user_data
    assert "EC2_LIFECYCLE_WATCH=true" in user_data
    assert group["AutoScalingGroupName"] == {"Fn::Sub": "${AWS::StackName}-workers"}
    assert "EC2_AUTOSCALING_GROUP_NAME=\\n" in user_data  # the instance tag: two groups


def test_topic_queue_and_key_policies_let_sns_deliver(resources: dict[str, Any]) -> None:
    queue_policy = resources["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    delivers = next(s for s in queue_policy if s["Sid"] == "CompletionTopicDelivers")
    assert delivers["Principal"] == {"Service": "sns.amazonaws.com"}
    assert delivers["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Ref": "CompletionTopic"}
    key_policy = resources["Key"]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Principal"] == {"Service": "sns.amazonaws.com"} for s in key_policy)
    subscription = resources["EventsSubscription"]["Properties"]
    assert subscription["RawMessageDelivery"] is True
    topic_policy = resources["CompletionTopicPolicy"]["Properties"]["PolicyDocument"]
    assert {s.get("Sid") for s in topic_policy["Statement"]} >= {"WorkersPublish", "TlsOnly"}


# ------------------------------------------------------------------ deployed


def _client(endpoint: str, service: str) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


class Deployed:
    """A stack created from the template on the moto server."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.name = f"illustrator-{uuid.uuid4().hex[:8]}"
        ec2 = self.client("ec2")
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])
        by_zone = {s["AvailabilityZone"]: s["SubnetId"] for s in subnets["Subnets"]}
        self.subnets = sorted(by_zone.values())[:2]
        self.ami = ec2.describe_images()["Images"][0]["ImageId"]
        self.vpc = vpc["VpcId"]

    def client(self, service: str) -> Any:
        """A boto3 client on the moto endpoint."""
        return _client(self.endpoint, service)

    def create(self, **extra: str) -> dict[str, str]:
        """Create the stack (with `extra` parameters), wait for it, and return its outputs."""
        cfn = self.client("cloudformation")
        parameters = {
            "ContainerImage": IMAGE,
            "ImageId": self.ami,
            "VpcId": self.vpc,
            "SubnetIds": ",".join(self.subnets),
            **extra,
        }
        cfn.create_stack(
            StackName=self.name,
            TemplateBody=TEMPLATE.read_text(encoding="utf-8"),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        deadline = time.monotonic() + 60
        while True:
            stack = cfn.describe_stacks(StackName=self.name)["Stacks"][0]
            if not stack["StackStatus"].endswith("_IN_PROGRESS"):
                break
            assert time.monotonic() < deadline, "stack creation did not finish"
            time.sleep(0.1)
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
        self.resources = {
            r["LogicalResourceId"]: r
            for r in cfn.describe_stack_resources(StackName=self.name)["StackResources"]
            if "LogicalResourceId" in r
        }
        return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    def physical(self, logical_id: str) -> str:
        """The physical id of a created resource."""
        return str(self.resources[logical_id]["PhysicalResourceId"])


@pytest.fixture(scope="module")
def deployed(moto_endpoint: str) -> tuple[Deployed, dict[str, str]]:
    """The template deployed once for the module's checks."""
    stack = Deployed(moto_endpoint)
    return stack, stack.create()


def _queue_attributes(deployed: Deployed, url: str) -> dict[str, str]:
    response = deployed.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    attributes: dict[str, str] = response["Attributes"]
    return attributes


def test_outputs_name_the_queue_topic_and_bucket(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    assert set(outputs) >= {"RequestQueueUrl", "CompletionTopicArn", "BucketName"}
    assert outputs["CompletionTopicArn"].endswith(f":{stack.name}-completions")
    stack.client("s3").head_bucket(Bucket=outputs["BucketName"])
    assert outputs["AutoScalingGroupName"] == f"{stack.name}-workers"


@pytest.mark.parametrize(
    ("queue_output", "dlq_output"),
    [
        ("RequestQueueUrl", "DeadLetterQueueUrl"),
        ("PriorityQueueUrl", "PriorityDeadLetterQueueUrl"),
    ],
    ids=["request", "priority"],
)
def test_each_queue_polls_long_is_encrypted_and_dead_letters_after_ten(
    deployed: tuple[Deployed, dict[str, str]], queue_output: str, dlq_output: str
) -> None:
    stack, outputs = deployed
    queue = _queue_attributes(stack, outputs[queue_output])
    dlq = _queue_attributes(stack, outputs[dlq_output])
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    assert queue["VisibilityTimeout"] == "300"
    assert queue["KmsMasterKeyId"] == dlq["KmsMasterKeyId"] == stack.physical("Key")
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    # A safety net above the worker's MAX_ATTEMPTS (3), which ends a failing
    # request itself, with its failed event.
    assert int(redrive["maxReceiveCount"]) == 10
    assert int(dlq["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])


def test_priority_queue_has_a_dead_letter_queue_of_its_own(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    priority = _queue_attributes(stack, outputs["PriorityDeadLetterQueueUrl"])
    assert (
        priority["QueueArn"] != _queue_attributes(stack, outputs["DeadLetterQueueUrl"])["QueueArn"]
    )


def test_dashboard_names_the_deployed_queues_and_group(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    board = stack.client("cloudwatch").get_dashboard(DashboardName=outputs["DashboardName"])
    text = json.dumps(json.loads(board["DashboardBody"]))
    for url in ("RequestQueueUrl", "PriorityQueueUrl", "DeadLetterQueueUrl"):
        assert f'"{outputs[url].rsplit("/", 1)[1]}"' in text
    assert f'"{outputs["AutoScalingGroupName"]}"' in text
    assert '"AutoBio/Illustrator", "GenerateSeconds"' in text


def test_topic_and_key(deployed: tuple[Deployed, dict[str, str]]) -> None:
    stack, outputs = deployed
    topic = stack.client("sns").get_topic_attributes(TopicArn=outputs["CompletionTopicArn"])
    assert topic["Attributes"]["KmsMasterKeyId"] == stack.physical("Key")
    rotation = stack.client("kms").get_key_rotation_status(KeyId=stack.physical("Key"))
    assert rotation["KeyRotationEnabled"] is True


def test_bucket_is_private_encrypted_and_versioned(
    deployed: tuple[Deployed, dict[str, str]], resources: dict[str, Any]
) -> None:
    stack, outputs = deployed
    s3 = stack.client("s3")
    bucket = outputs["BucketName"]
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto applies only encryption and tags from a bucket's properties.
    properties = resources["Bucket"]["Properties"]
    block = properties["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"], True
    )
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert resources["Bucket"]["DeletionPolicy"] == "Retain"


def test_worker_role_reaches_only_this_stacks_resources(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    iam = stack.client("iam")
    role = stack.physical("WorkerRole")
    document = iam.get_role_policy(RoleName=role, PolicyName="illustrator-worker")["PolicyDocument"]
    if isinstance(document, str):
        # moto keeps a CloudFormation inline policy as the repr of its dict.
        document = ast.literal_eval(document)
    statements = {s["Sid"]: s for s in document["Statement"]}
    queue_arn = _queue_attributes(stack, outputs["RequestQueueUrl"])["QueueArn"]
    dlq_arn = _queue_attributes(stack, outputs["DeadLetterQueueUrl"])["QueueArn"]
    bucket_arn = f"arn:aws:s3:::{outputs['BucketName']}"
    priority_arn = _queue_attributes(stack, outputs["PriorityQueueUrl"])["QueueArn"]
    priority_dlq_arn = _queue_attributes(stack, outputs["PriorityDeadLetterQueueUrl"])["QueueArn"]
    assert statements["ConsumeRequests"]["Resource"] == [queue_arn, priority_arn]
    assert statements["DeadLetterPermanentFailures"]["Resource"] == [dlq_arn, priority_dlq_arn]
    report = statements["ReportUnhealthyInOwnGroup"]
    assert report["Action"] == "autoscaling:SetInstanceHealth"
    assert [arn.rsplit(":", 1)[1] for arn in report["Resource"]] == [
        f"autoScalingGroupName/{stack.name}-workers",
        f"autoScalingGroupName/{stack.name}-workers-warm",
    ]
    assert report["Condition"] == {
        "StringEquals": {"autoscaling:ResourceTag/aws:cloudformation:stack-name": stack.name}
    }
    assert statements["PublishCompletions"]["Resource"] == outputs["CompletionTopicArn"]
    assert sorted(statements["ReadInputsAndWeights"]["Resource"]) == [
        f"{bucket_arn}/avatars/*",
        f"{bucket_arn}/cancellations/*",
        f"{bucket_arn}/models/*",
        f"{bucket_arn}/subjects/*",
    ]
    assert statements["ReadInputsAndWeights"]["Action"] == "s3:GetObject"
    assert statements["WriteOutputs"]["Resource"] == f"{bucket_arn}/generated/*"
    # Listing: the model folders only, never users' inputs.
    listing = [s for s in document["Statement"] if "s3:ListBucket" in json.dumps(s["Action"])]
    assert [s["Sid"] for s in listing] == ["ListModelFolders"]
    assert listing[0]["Condition"] == {"StringLike": {"s3:prefix": "models/*"}}
    assert "s3:DeleteObject" not in json.dumps(document)
    resources = [r for s in document["Statement"] for r in _as_list(s["Resource"])]
    assert "*" not in resources
    profile = iam.get_instance_profile(InstanceProfileName=stack.physical("WorkerInstanceProfile"))
    assert [r["RoleName"] for r in profile["InstanceProfile"]["Roles"]] == [role]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_launch_template_runs_the_container_with_imdsv2(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    versions = stack.client("ec2").describe_launch_template_versions(
        LaunchTemplateId=stack.physical("WorkerLaunchTemplate")
    )
    data = versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    script = base64.b64decode(data["UserData"]).decode()
    assert script.startswith("#!/bin/bash\n")
    assert f"SQS_QUEUE_URL={outputs['RequestQueueUrl']}" in script
    assert f"SQS_PRIORITY_QUEUE_URL={outputs['PriorityQueueUrl']}" in script
    assert "METRICS_NAMESPACE=AutoBio/Illustrator\n" in script
    # The scripts arrive verbatim, and the boot starts the watchdog, then the workers.
    for name in ("start-workers.sh", "watchdog.sh"):
        body = (ROOT / "infra" / name).read_text()
        assert f"<<'ILLUSTRATOR_SCRIPT'\n{body}ILLUSTRATOR_SCRIPT\n" in script
    tail = script.rsplit("ILLUSTRATOR_SCRIPT\n", 1)[1]
    assert tail.index("systemctl enable --now illustrator-watchdog.timer") < tail.index(
        '"$OPT/start-workers.sh"\n'
    )
    assert f"SNS_TOPIC_ARN={outputs['CompletionTopicArn']}" in script
    assert f"S3_BUCKET_NAME={outputs['BucketName']}" in script
    assert f"IMAGE='{IMAGE}'" in script
    assert "${IMAGE%%/*}" in script
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_group_spreads_over_zones_with_the_launch_template(
    deployed: tuple[Deployed, dict[str, str]],
) -> None:
    stack, outputs = deployed
    [group] = stack.client("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[outputs["AutoScalingGroupName"]]
    )["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"]) == (0, 4)
    assert sorted(group["VPCZoneIdentifier"].split(",")) == stack.subnets
    assert len(set(group["AvailabilityZones"])) == 2
    template = group["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]
    assert template["LaunchTemplateId"] == stack.physical("WorkerLaunchTemplate")


def test_illustrator_commands_work_against_the_deployed_stack(
    deployed: tuple[Deployed, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from consumer.cli import main as cli

    stack, outputs = deployed
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    monkeypatch.setenv("SQS_QUEUE_URL", outputs["RequestQueueUrl"])
    monkeypatch.setenv("S3_BUCKET_NAME", outputs["BucketName"])

    assert cli.main(["submit", "subject", "--user-id", "u1", "--job-id", "deployed-1"]) == 0
    # The DLQ is found through the deployed RedrivePolicy.
    assert cli.main(["dlq", "list"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("deployed-1\n")
    assert outputs["DeadLetterQueueUrl"].rsplit("/", 1)[1] in out
    received = stack.client("sqs").receive_message(QueueUrl=outputs["RequestQueueUrl"])
    assert json.loads(received["Messages"][0]["Body"])["job_id"] == "deployed-1"
