"""infra/illustrator.yaml, the warm pool within AWS's rules: an On-Demand group
with a launch template (no Spot, no mixed instances policy) serves first, its
pool of stopped, prepared instances reuses instances on scale-in, and the
lifecycle hooks of both groups are the ones the boot script and the workers
complete."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from consumer.settings import Settings
from tests.infra.cfn import ROOT, Resolved, load_template

START = ROOT / "infra" / "start-workers.sh"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_the_warm_pool_is_on_by_default_with_at_least_one_instance(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    assert parameters["WarmPool"]["Default"] == "true"
    assert parameters["WarmPoolMinSize"]["Default"] >= 1
    assert parameters["WarmPoolMinSize"]["MinValue"] >= 1
    pool = Resolved(template).resource("WorkerWarmPool")
    assert pool == {
        "AutoScalingGroupName": "illustrator-WarmGroup",
        "MinSize": "1",
        "PoolState": "Stopped",
        "InstanceReusePolicy": {"ReuseOnScaleIn": True},
    }
    assert template["Resources"]["WorkerWarmPool"]["Type"] == "AWS::AutoScaling::WarmPool"


def test_the_warm_group_is_on_demand_as_aws_requires(template: dict[str, Any]) -> None:
    # AWS allows no warm pool on a group with a mixed instances policy or
    # one that launches Spot Instances.
    resolved = Resolved(template)
    warm = resolved.resource("WarmGroup")
    assert "MixedInstancesPolicy" not in warm
    assert warm["LaunchTemplate"]["LaunchTemplateId"] == "illustrator-WorkerLaunchTemplate"
    data = resolved.resource("WorkerLaunchTemplate")["LaunchTemplateData"]
    assert "InstanceMarketOptions" not in data
    assert warm["AutoScalingGroupName"] == "illustrator-workers-warm"
    assert warm["MaxSize"] == "16"
    # The Spot/mixed group keeps its mixed instances policy and no pool.
    assert "MixedInstancesPolicy" in resolved.resource("WorkerGroup")
    pools = [b for b in template["Resources"].values() if b["Type"] == "AWS::AutoScaling::WarmPool"]
    assert [p["Properties"]["AutoScalingGroupName"] for p in pools] == [{"Ref": "WarmGroup"}]


def _hooks(resolved: Resolved, group: str) -> dict[str, dict[str, Any]]:
    specs = resolved.resource(group)["LifecycleHookSpecificationList"]
    return {h["LifecycleHookName"]: h for h in specs}


@pytest.mark.parametrize("group", ["WarmGroup", "WorkerGroup"])
def test_both_groups_hold_new_instances_until_ready_and_old_ones_until_drained(
    template: dict[str, Any], group: str
) -> None:
    hooks = _hooks(Resolved(template), group)
    ready, drain = hooks["illustrator-ready"], hooks["illustrator-drain"]
    assert ready["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_LAUNCHING"
    # An instance with no healthy worker by the boot deadline is replaced.
    assert (ready["HeartbeatTimeout"], ready["DefaultResult"]) == ("900", "ABANDON")
    assert drain["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert drain["DefaultResult"] == "CONTINUE"


def test_the_hook_names_are_the_ones_the_workers_and_the_boot_script_complete(
    template: dict[str, Any],
) -> None:
    hooks = _hooks(Resolved(template), "WarmGroup")
    assert Settings.model_fields["ec2_launch_hook_name"].default in hooks
    assert Settings.model_fields["ec2_lifecycle_hook_name"].default in hooks
    default = re.search(r"^LAUNCH_HOOK=\$\{LAUNCH_HOOK:-([\w-]+)\}$", START.read_text(), re.M)
    assert default is not None
    assert default[1] in hooks


def test_the_workers_find_their_group_from_the_instance_tag(template: dict[str, Any]) -> None:
    # Two groups share the launch template: the group name is the instance's
    # own aws:autoscaling:groupName tag, read from the instance metadata.
    resolved = Resolved(template)
    data = resolved.resource("WorkerLaunchTemplate")["LaunchTemplateData"]
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    user_data = base64.b64decode(data["UserData"]).decode()
    assert "\nEC2_AUTOSCALING_GROUP_NAME=\n" in user_data
    assert "\nEC2_LIFECYCLE_WATCH=true\n" in user_data


def test_workers_may_complete_actions_and_report_health_in_both_groups_only(
    template: dict[str, Any],
) -> None:
    policy = Resolved(template).resource("WorkerRole")["Policies"][0]["PolicyDocument"]
    statements = {s["Sid"]: s for s in policy["Statement"]}
    prefix = "arn:aws:autoscaling:us-east-1:111111111111:autoScalingGroup:*:autoScalingGroupName/"
    groups = [prefix + "illustrator-workers", prefix + "illustrator-workers-warm"]
    assert statements["CompleteOwnLifecycleActions"]["Resource"] == groups
    assert statements["ReportUnhealthyInOwnGroup"]["Resource"] == groups


def test_outputs_name_both_groups(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["WarmGroupName"]["Condition"] == "HasWarmPool"
    assert outputs["WarmGroupName"]["Value"] == {"Ref": "WarmGroup"}
    assert outputs["AutoScalingGroupName"]["Value"] == {"Ref": "WorkerGroup"}
