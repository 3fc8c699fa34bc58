"""Configuration: defaults, `.env`, and one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from consumer.cli.main import main
from consumer.errors import ConfigError
from consumer.settings import load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "env.example"


def test_contract_defaults() -> None:
    settings = load_settings()
    assert settings.model_path == "stabilityai/stable-diffusion-xl-base-1.0"
    assert settings.model_s3_path == ""
    assert settings.enable_ip_adapter is True
    assert settings.enable_lora is False
    assert settings.default_num_inference_steps == 50
    assert settings.default_ip_adapter_scale == pytest.approx(0.33)
    assert settings.default_guidance_scale == pytest.approx(5.0)
    assert settings.default_negative_prompt == "error, glitch, mistake"
    assert settings.aws_region == "us-east-1"
    # No default bucket: a made-up name would be somebody else's bucket.
    assert settings.s3_bucket_name == ""
    assert (settings.s3_avatar_prefix, settings.s3_subject_prefix) == ("avatars/", "subjects/")
    assert settings.s3_generated_prefix == "generated/"
    assert settings.auth_enabled is False
    assert settings.max_attempts == 3
    assert settings.visibility_timeout_s is None
    assert (settings.retry_backoff_base_s, settings.retry_backoff_max_s) == (10, 900)
    assert settings.drain_timeout_s == 90
    assert (settings.health_host, settings.health_port) == ("0.0.0.0", 8080)
    assert (settings.log_level, settings.log_format) == ("info", "json")
    assert settings.max_input_bytes == 20 * 1024 * 1024
    assert settings.max_input_pixels == 40_000_000


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SQS_QUEUE_URL=http://q\nDEFAULT_NUM_INFERENCE_STEPS=12\n")
    settings = load_settings("sqs_queue_url")
    assert settings.sqs_queue_url == "http://q"
    assert settings.default_num_inference_steps == 12


def test_environment_wins_over_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HEALTH_PORT=1\n")
    monkeypatch.setenv("HEALTH_PORT", "2")
    assert load_settings().health_port == 2


def test_missing_required_setting_names_it() -> None:
    with pytest.raises(ConfigError, match=r"^SQS_QUEUE_URL is required"):
        load_settings("sqs_queue_url")


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("DEFAULT_NUM_INFERENCE_STEPS", "0", "DEFAULT_NUM_INFERENCE_STEPS"),
        ("DEFAULT_IP_ADAPTER_SCALE", "nan", "DEFAULT_IP_ADAPTER_SCALE"),
        ("HEALTH_PORT", "http", "HEALTH_PORT"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("AUTH_ENABLED", "true", "AUTH_TOKEN is required"),
        ("ENABLE_LORA", "true", "LORA_PATH is required"),
        ("SCHEDULER", "euler", "SCHEDULER: unknown scheduler 'euler'"),
        ("TIMESTEP_SPACING", "even", "TIMESTEP_SPACING"),
        ("TORCH_COMPILE_MODE", "fast", "TORCH_COMPILE_MODE"),
        ("MAX_BATCH_PIXELS", "0", "MAX_BATCH_PIXELS"),
        ("DTYPE", "float8", "DTYPE"),
    ],
)
def test_invalid_settings_give_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert needle in caught.value.message
    assert "\n" not in caught.value.message


def test_karras_sigmas_need_a_scheduler_that_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_KARRAS", "true")
    monkeypatch.setenv("SCHEDULER", "DPMSolverMultistepScheduler")
    assert load_settings().scheduler_karras
    monkeypatch.setenv("SCHEDULER", "DDIMScheduler")
    with pytest.raises(ConfigError, match="SCHEDULER_KARRAS: DDIMScheduler has no Karras sigmas"):
        load_settings()


def test_auth_token_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_ENABLED", "true")
    monkeypatch.setenv("AUTH_TOKEN", "s3cr3t-value")
    settings = load_settings()
    assert settings.auth_token.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.model_dump())


def test_env_example_lists_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    listed = {line.lstrip("# ").split("=")[0] for line in text.splitlines() if "=" in line}
    from consumer.settings import Settings

    missing = {name.upper() for name in Settings.model_fields} - listed
    assert not missing


def test_cli_reports_config_errors_in_one_line_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from consumer.cli import schema

    monkeypatch.setenv("HEALTH_PORT", "not-a-port")
    monkeypatch.setattr(schema, "main", lambda args: load_settings().health_port)
    assert main(["schema"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("illustrator: invalid configuration: HEALTH_PORT")
    assert len(err.splitlines()) == 1


def test_python_dash_m_consumer_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "schema" in result.stdout


def _cache_model(cache: Path, repo_id: str) -> None:
    """`repo_id` in a hub cache as huggingface_hub lays it out."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "model_index.json").write_text("{}")
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("0123abc")


def _model(monkeypatch: pytest.MonkeyPatch, value: str, **env: str) -> None:
    from consumer.aws.model_sources import check_model_source
    from consumer.settings import Settings

    monkeypatch.setenv("MODEL_PATH", value)
    for name, setting in env.items():
        monkeypatch.setenv(name, setting)
    check_model_source(Settings())


@pytest.mark.parametrize("value", ["builtin:tiny", "builtin:blank"])
def test_builtin_models_pass_the_model_check(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    _model(monkeypatch, value)


def test_a_local_folder_passes_the_model_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _model(monkeypatch, str(tmp_path))


def test_a_hub_id_passes_only_when_it_is_in_the_local_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="nor a hub id in the local hub cache"):
        _model(monkeypatch, "org/model")
    (tmp_path / "models--org--model" / "snapshots" / "0123abc").mkdir(parents=True)
    with pytest.raises(ConfigError, match="nor a hub id"):  # a snapshot without its files
        _model(monkeypatch, "org/model")
    _cache_model(tmp_path, "org/model")
    _model(monkeypatch, "org/model")


def test_hf_home_locates_the_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    _cache_model(tmp_path / "hub", "org/model")
    _model(monkeypatch, "org/model", HF_HOME=str(tmp_path))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("builtin:tinyy", "MODEL_PATH=builtin:tinyy: unknown built-in model"),
        ("/nope/model", "MODEL_PATH=/nope/model: not a local folder"),
        ("", "MODEL_PATH is empty"),
    ],
)
def test_bad_model_paths_name_the_setting_and_the_built_ins(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        _model(monkeypatch, value)
    assert raised.value.message.startswith(message)
    assert "builtin:blank, builtin:tiny" in raised.value.message


def test_an_s3_model_source_skips_the_model_path_check(monkeypatch: pytest.MonkeyPatch) -> None:
    _model(monkeypatch, "/nope/model", MODEL_S3_PATH="s3://bucket/models/")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SQS_QUEUE_URL": "https://q/req", "SQS_DLQ_URL": "https://q/req"}, "SQS_DLQ_URL"),
        (
            {"SQS_PRIORITY_QUEUE_URL": "https://q/pri", "SQS_DLQ_URL": "https://q/pri/"},
            "SQS_PRIORITY_QUEUE_URL",
        ),
        ({"S3_AVATAR_PREFIX": ""}, "S3_AVATAR_PREFIX"),
        ({"S3_GENERATED_PREFIX": ""}, "S3_GENERATED_PREFIX"),
        ({"S3_SUBJECT_PREFIX": "avatars/sub/"}, "S3_SUBJECT_PREFIX"),
        ({"S3_CANCEL_PREFIX": "gen", "S3_GENERATED_PREFIX": "generated/"}, "S3_GENERATED_PREFIX"),
        (
            {"S3_BUCKET_NAME": "b", "MODEL_S3_PATH": "s3://b/avatars/model.safetensors"},
            "MODEL_S3_PATH",
        ),
        ({"S3_BUCKET_NAME": "b", "LORA_PATH": "s3://b/generated/x.safetensors"}, "LORA_PATH"),
        ({"AUTH_ENABLED": "true"}, "AUTH_TOKEN"),
        ({"AUTH_TOKEN_FILE": "/run/tokens"}, "AUTH_ENABLED"),
        (
            {"AUTH_ENABLED": "true", "AUTH_TOKEN": "t", "AUTH_TOKEN_SECRET_ID": "s"},
            "AUTH_TOKEN_SECRET_ID",
        ),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_model_files_may_nest_among_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_BUCKET_NAME", "b")
    monkeypatch.setenv("MODEL_S3_PATH", "s3://b/models/sdxl/")
    monkeypatch.setenv("VAE_PATH", "s3://b/models/sdxl/vae/")
    monkeypatch.setenv("LORA_PATH", "s3://other/avatars/x.safetensors")
    assert load_settings().vae_path == "s3://b/models/sdxl/vae/"


def test_a_bad_token_file_exits_two_before_the_model_loads(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("t1\n")
    tokens.chmod(0o644)
    env = {
        "PATH": "/usr/bin:/bin",
        "AUTH_ENABLED": "true",
        "AUTH_TOKEN_FILE": str(tokens),
        "SQS_QUEUE_URL": "https://q/req",
        "SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:1:t",
        "S3_BUCKET_NAME": "b",
        "MODEL_PATH": "builtin:blank",
    }
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "AUTH_TOKEN_FILE=" in result.stderr
    assert "0600" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"model_path": "builtin:tiny"}, "MODEL_PATH=builtin:tiny"),
        ({"model_path": "stabilityai/sdxl"}, "MODEL_PATH=stabilityai/sdxl"),
        ({"model_path": "builtin:blank", "safety_checker_path": "/c"}, "SAFETY_CHECKER_PATH=/c"),
    ],
)
def test_a_model_on_an_install_without_the_pipeline_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], named: str
) -> None:
    import importlib.util

    from consumer.aws.model_sources import check_model_source
    from consumer.settings import Settings

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "diffusers" else real(name)
    )
    with pytest.raises(ConfigError) as raised:
        check_model_source(Settings(**overrides))
    assert raised.value.message.startswith(f"{named}: the pipeline's libraries are not installed")
    assert "(diffusers)" in raised.value.message
    assert "pip install 'autobio-illustrator[gpu]'" in raised.value.message
    # builtin:blank needs none of them.
    check_model_source(Settings(model_path="builtin:blank"))
