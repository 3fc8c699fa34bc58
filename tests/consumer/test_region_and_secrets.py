"""The region from the AWS chain, and every secret setting scrubbed however it was set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import structlog

from consumer.aws.clients import open_clients
from consumer.cli import run
from consumer.settings import Settings

PROFILES = """\
[default]
region = ap-southeast-2

[profile elsewhere]
region = eu-west-3
"""


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No region anywhere in the chain; an AWS config file with two profiles, unused yet."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    config.write_text(PROFILES)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-file"))
    return config


def test_us_east_1_only_when_nothing_names_a_region(chain: Path) -> None:
    assert Settings().aws_region == "us-east-1"


def test_the_default_profile_names_the_region(chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(chain))
    assert Settings().aws_region == "ap-southeast-2"


def test_aws_profile_chooses_the_profile(chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(chain))
    monkeypatch.setenv("AWS_PROFILE", "elsewhere")
    assert Settings().aws_region == "eu-west-3"


def test_aws_default_region_beats_the_profile(chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(chain))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    assert Settings().aws_region == "ca-central-1"


def test_aws_region_beats_everything(chain: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(chain))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ca-central-1")
    monkeypatch.setenv("AWS_REGION", "sa-east-1")
    assert Settings().aws_region == "sa-east-1"


def test_a_profile_that_does_not_exist_falls_back(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(chain))
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    assert Settings().aws_region == "us-east-1"


async def test_the_clients_use_the_chains_region(
    chain: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    async with open_clients(Settings().aws_region) as clients:
        assert clients.sqs.meta.region_name == "eu-north-1"
        assert clients.s3.meta.region_name == "eu-north-1"


TOKEN = "current-token-7f3a9c"
PREVIOUS = "retiring-token-0b21e4"


@pytest.fixture
def dotenv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both tokens in `.env` (the working directory is the test's own), none in the environment."""
    for name in ("AUTH_TOKEN", "AUTH_TOKEN_PREVIOUS"):
        monkeypatch.delenv(name, raising=False)
    Path(".env").write_text(
        f"AUTH_ENABLED=true\nAUTH_TOKEN={TOKEN}\nAUTH_TOKEN_PREVIOUS={PREVIOUS}\n"
        "SQS_QUEUE_URL=http://127.0.0.1:1/queue/q\nSNS_TOPIC_ARN=arn:aws:sns:us-east-1:1:t\n"
        "S3_BUCKET_NAME=illustrations\nMODEL_PATH=builtin:blank\n"
    )


def test_secret_values_are_every_secret_setting(dotenv: None) -> None:
    settings = Settings()
    assert sorted(settings.secret_values()) == sorted([TOKEN, PREVIOUS])


def test_the_run_command_scrubs_tokens_set_in_dotenv(
    dotenv: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def serve(*_: object, **__: object) -> int:
        # What a careless line anywhere in the service might do.
        structlog.get_logger("test").warning("tokens", note=f"{TOKEN} and {PREVIOUS}")
        return 0

    monkeypatch.setattr("consumer.service.wiring.serve", serve)
    assert run.main(argparse.Namespace(burst=True)) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (line,) = [line for line in lines if line["event"] == "tokens"]
    assert line["note"] == "[redacted] and [redacted]"
