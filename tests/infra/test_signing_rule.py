"""The template refuses a producer without signatures (its CloudFormation Rule).

moto's CloudFormation does not evaluate Rules, so the rule is evaluated here
on the template, for every combination of the two parameters.
"""

from __future__ import annotations

import pytest

from tests.infra.cfn import Resolved, load_template
from tests.infra.test_boot import _run_user_data, _user_data
from tests.infra.test_worker_scripts import Host, host

__all__ = ["host"]

PRODUCER = "arn:aws:iam::222222222222:role/autobio-app"
SECRET = "arn:aws:secretsmanager:us-east-1:111111111111:secret:illustrator-auth-token-a1B2c3"


def _refused(parameters: dict[str, str]) -> list[str]:
    """The descriptions of the rules' assertions that fail for `parameters`."""
    template = load_template()
    resolved = Resolved(template, parameters)
    failed = []
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not resolved.resolve(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not resolved.resolve(assertion["Assert"]):
                failed.append(assertion["AssertDescription"])
    return failed


@pytest.mark.parametrize(
    ("parameters", "refused"),
    [
        ({"ProducerPrincipalArn": PRODUCER}, True),
        ({"ProducerPrincipalArn": PRODUCER, "AuthTokenSecretArn": SECRET}, False),
        ({"AuthTokenSecretArn": SECRET}, False),
        ({}, False),
    ],
)
def test_a_producer_needs_signed_requests(parameters: dict[str, str], refused: bool) -> None:
    failed = _refused(parameters)
    assert bool(failed) is refused
    if refused:
        assert "AuthTokenSecretArn" in failed[0]


def test_the_user_data_names_the_secret_and_never_holds_a_token(host: Host) -> None:
    assert "\nAUTH_ENABLED=false\nAUTH_TOKEN_SECRET_ID=\n" in _user_data()
    script = _user_data(AuthTokenSecretArn=SECRET)
    assert f"\nAUTH_ENABLED=true\nAUTH_TOKEN_SECRET_ID={SECRET}\n" in script
    assert "AUTH_TOKEN=" not in script
    assert "get-secret-value" not in script  # the worker reads the secret, not the boot
    assert _run_user_data(host, script).returncode == 0
    env_file = host.root / "instance" / "etc" / "illustrator" / "illustrator.env"
    assert f"AUTH_TOKEN_SECRET_ID={SECRET}\n" in env_file.read_text()
    assert env_file.stat().st_mode & 0o077 == 0
