"""The service's one settings object, read from the environment and `.env`.

Every variable of the wire contract's section 6 lives here with the seed's
defaults, plus the settings the service itself adds (model cache, LoRA and
IP-Adapter sources, lifecycle watching). Validation errors are turned into a
one-line message by :func:`load_settings` so a mistyped deployment fails with
exit status 2 and a sentence, not a traceback.
"""

from __future__ import annotations

import os
import socket
from typing import Literal

import botocore.session
from botocore.exceptions import BotoCoreError
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.errors import ConfigError
from pipeline.api import limits
from pipeline.api.batch import DEFAULT_MAX_BATCH_PIXELS
from pipeline.api.config import (
    Device,
    Dtype,
    PipelineConfig,
    TimestepSpacing,
    TorchCompileMode,
    check_scheduler,
    compile_sizes,
)
from pipeline.api.prep_wire import DEFAULT_PREP_TIMEOUT_S

DEFAULT_REGION = "us-east-1"
DEFAULT_NEGATIVE_PROMPT = "error, glitch, mistake"
DEFAULT_MEMORY_STYLE_PROMPT = (
    "highest quality, monochrome, professional sketch, personal, nostalgic, clean"
)
DEFAULT_SUBJECT_STYLE_PROMPT = "highest quality, professional sketch, monochrome"
# The pipeline's defaults, which the settings of the same names take.
_PIPELINE = PipelineConfig(model_path="")
_TEXT = int(limits.TEXT.maximum)


class GenerationDefaults(BaseSettings):
    """Defaults that fill a request's optional fields, and the input rules.

    Kept apart from :class:`Settings` so that parsing a request needs neither
    queue URLs nor credentials (the CLI's `submit` and the tests use it alone).
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # The bounds are the request's own (pipeline.api.limits).
    default_num_inference_steps: int = Field(50, ge=limits.STEPS.minimum, le=limits.STEPS.maximum)
    default_ip_adapter_scale: float = Field(
        0.33,
        ge=limits.IP_ADAPTER_SCALE.minimum,
        le=limits.IP_ADAPTER_SCALE.maximum,
        allow_inf_nan=False,
    )
    default_guidance_scale: float = Field(
        5.0,
        ge=limits.GUIDANCE_SCALE.minimum,
        le=limits.GUIDANCE_SCALE.maximum,
        allow_inf_nan=False,
    )
    default_negative_prompt: str = Field(DEFAULT_NEGATIVE_PROMPT, max_length=_TEXT)
    default_memory_style_prompt: str = Field(DEFAULT_MEMORY_STYLE_PROMPT, max_length=_TEXT)
    default_subject_style_prompt: str = Field(DEFAULT_SUBJECT_STYLE_PROMPT, max_length=_TEXT)
    # Never empty: a user named "generated" would pass the namespace check,
    # and the workers' grant on the prefix would be the whole bucket.
    s3_avatar_prefix: str = Field("avatars/", min_length=1, max_length=256)
    s3_subject_prefix: str = Field("subjects/", min_length=1, max_length=256)
    s3_generated_prefix: str = Field("generated/", min_length=1, max_length=256)
    max_input_bytes: int = Field(int(limits.INPUT_BYTES.maximum), gt=0)
    max_input_pixels: int = Field(int(limits.INPUT_PIXELS.maximum), gt=0)
    # The longer side of an input at most this many times the shorter.
    max_input_aspect: float = Field(
        float(limits.INPUT_ASPECT.maximum), ge=1.0, le=1000.0, allow_inf_nan=False
    )
    # Preparing one input picture (in a process of its own) takes at most this long.
    input_prep_timeout_s: float = Field(DEFAULT_PREP_TIMEOUT_S, gt=0, le=600, allow_inf_nan=False)
    # num_images x width x height of one request; above it the request is refused.
    max_batch_pixels: int = Field(DEFAULT_MAX_BATCH_PIXELS, gt=0)
    # steps x num_images x width x height / 1024^2 of one request; above it, refused.
    max_request_cost: float = Field(
        float(limits.REQUEST_COST.maximum), gt=0.0, le=100_000.0, allow_inf_nan=False
    )
    # Tokens of the prompt with its style prompt (and of the negative prompt).
    max_prompt_tokens: int = Field(int(limits.PROMPT_TOKENS.maximum), ge=1, le=100_000)


class Settings(GenerationDefaults):
    """Everything `illustrator run` needs, validated once at start."""

    # Model and pipeline: the allowed values and defaults are the pipeline's
    # own (pipeline/api/config.py); "" stands for unset where it has None.
    model_path: str = "stabilityai/stable-diffusion-xl-base-1.0"
    model_s3_path: str = ""
    model_cache_dir: str = Field(
        default_factory=lambda: os.path.join(os.path.expanduser("~"), ".cache", "illustrator")
    )
    enable_ip_adapter: bool = _PIPELINE.enable_ip_adapter
    ip_adapter_path: str = _PIPELINE.ip_adapter_path
    ip_adapter_subfolder: str = _PIPELINE.ip_adapter_subfolder
    ip_adapter_weight_name: str = _PIPELINE.ip_adapter_weight_name
    # A second adapter file beside the first (same folder and image encoder),
    # used by subject jobs; empty: both kinds use IP_ADAPTER_WEIGHT_NAME.
    subject_ip_adapter_weight_name: str = ""
    ip_adapter_image_encoder_path: str = ""
    enable_lora: bool = False
    lora_path: str = ""
    lora_scale: float = Field(_PIPELINE.lora_scale, ge=0.0, le=4.0, allow_inf_nan=False)
    torch_compile: bool = _PIPELINE.torch_compile
    torch_compile_mode: TorchCompileMode | Literal[""] = ""
    # "WIDTHxHEIGHT,..." compiled for (empty: the native size); other sizes run uncompiled.
    torch_compile_sizes: str = ""
    torch_compile_vae: bool = _PIPELINE.torch_compile_vae
    torch_compile_regional: bool = _PIPELINE.torch_compile_regional
    device: Device | Literal[""] = ""
    dtype: Dtype | Literal[""] = ""
    vae_path: str = ""
    # Empty keeps the model's own scheduler class (Euler for SDXL).
    scheduler: str = ""
    scheduler_karras: bool = _PIPELINE.scheduler_karras
    timestep_spacing: TimestepSpacing = _PIPELINE.timestep_spacing
    # Pictures above this many pixels decode in tiles; 0: never.
    vae_tiling_pixels: int = Field(_PIPELINE.vae_tiling_pixels or 0, ge=0)
    warmup: bool = _PIPELINE.warmup
    # Output safety: a StableDiffusionSafetyChecker folder, cached hub id or
    # s3:// prefix (empty: off), and how often a flagged picture is redrawn.
    safety_checker_path: str = ""
    safety_max_redraws: int = Field(2, ge=0, le=10)
    blank_latency_ms: int = Field(_PIPELINE.blank_latency_ms, ge=0, le=3_600_000)
    # The style catalog (YAML or JSON; local or s3://), empty: no styles; and
    # the host memory its LoRA weights may take.
    styles_path: str = Field("", max_length=1024)
    style_cache_bytes: int = Field(_PIPELINE.style_cache_bytes, ge=0)

    # AWS. Empty: the rest of the AWS chain decides (see aws_chain_region).
    aws_region: str = ""
    # No default: a name that is not the deployment's own would read users'
    # pictures from, and write them to, whoever owns that bucket.
    s3_bucket_name: str = ""
    sqs_queue_url: str = ""
    sqs_priority_queue_url: str = ""
    sqs_dlq_url: str = ""
    sns_topic_arn: str = ""

    # Delivery.
    auth_enabled: bool = False
    auth_token: SecretStr = SecretStr("")
    # Accepted beside AUTH_TOKEN while a rotation is under way.
    auth_token_previous: SecretStr = SecretStr("")
    # Or the tokens, re-read when a signature does not verify, from a file
    # (mode 0600: the current token, then the previous one) or a Secrets
    # Manager secret (its AWSCURRENT and AWSPREVIOUS versions).
    auth_token_file: str = Field("", max_length=4096)
    auth_token_secret_id: str = Field("", max_length=2048)
    # Failures of the request itself, whatever the queue's maxReceiveCount.
    max_attempts: int = Field(3, ge=1, le=1000)
    retry_backoff_base_s: float = Field(10.0, ge=0.0)
    retry_backoff_max_s: float = Field(900.0, ge=0.0, le=43_200.0)
    visibility_timeout_s: int | None = Field(None, ge=1, le=43_200)
    drain_timeout_s: float = Field(90.0, ge=0.0)
    # Outages: how long a job is held for its service, and what may be held.
    outage_hold_s: float = Field(3600.0, ge=0.0, le=43_200.0)
    held_max_count: int = Field(4, ge=1, le=1000)
    held_max_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    # How long the start-up checks of the queues, topic and bucket wait out an outage.
    startup_timeout_s: float = Field(900.0, gt=0.0, le=43_200.0)
    # The deadline of a generation of cost REFERENCE_COST (50) or less; a costlier
    # one's grows in proportion (consumer/delivery/deadline.py). Past it the worker
    # is at fault: it stops, and the request is charged one worker death.
    generation_timeout_s: float = Field(600.0, gt=0.0, le=43_200.0)
    # Workers that may die with a request in flight before it fails as crashed_worker.
    max_worker_deaths: int = Field(2, ge=1, le=100)
    # With both queues holding work, the priority queue's largest share of receives.
    priority_share: float = Field(0.8, gt=0.0, le=1.0, allow_inf_nan=False)
    # Cancellation markers: <prefix><user_id>/<job_id>, looked for while a job
    # waits for and holds the GPU, every CANCEL_POLL_S.
    s3_cancel_prefix: str = Field("cancellations/", min_length=1, max_length=256)
    cancel_poll_s: float = Field(2.0, gt=0.0, le=60.0)
    worker_id: str = Field(default_factory=socket.gethostname, max_length=256)
    ec2_lifecycle_watch: bool = False
    ec2_autoscaling_group_name: str = Field("", max_length=255)
    ec2_lifecycle_hook_name: str = Field("illustrator-drain", min_length=1, max_length=255)
    # The launch hook also holds an instance the group returns to its warm pool.
    ec2_launch_hook_name: str = Field("illustrator-ready", min_length=1, max_length=255)
    ec2_lifecycle_poll_s: float = Field(5.0, gt=0.0, le=60.0)

    # Sidecar and logs.
    # The sidecar must be reachable by the orchestrator's health checks.
    health_host: str = "0.0.0.0"  # noqa: S104  # nosec B104
    health_port: int = Field(8080, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "console"] = "json"
    metrics_namespace: str = Field("AutoBio/Illustrator", min_length=1, max_length=255)
    publish_started_events: bool = False

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, name: str) -> str:
        return check_scheduler(name or None) or ""

    @field_validator("torch_compile_sizes")
    @classmethod
    def _compile_sizes(cls, value: str) -> str:
        compile_sizes(value)
        return value

    @model_validator(mode="after")
    def _check_dependencies(self) -> Settings:
        if not self.aws_region:
            self.aws_region = aws_chain_region()
        _check_token_source(self)
        _check_queues(self)
        _check_prefixes(self)
        if self.enable_lora and not self.lora_path:
            raise ValueError("LORA_PATH is required when ENABLE_LORA=true")
        if self.scheduler_karras:
            try:
                check_scheduler(self.scheduler or None, karras=True)
            except ValueError as error:
                raise ValueError(f"SCHEDULER_KARRAS: {error}") from None
        return self

    def request_queue_setting(self, url: str) -> str | None:
        """The setting (``SQS_QUEUE_URL`` or ``SQS_PRIORITY_QUEUE_URL``) that
        names `url` as a request queue, if one does."""
        for name, queue in (
            ("SQS_QUEUE_URL", self.sqs_queue_url),
            ("SQS_PRIORITY_QUEUE_URL", self.sqs_priority_queue_url),
        ):
            if queue and queue.rstrip("/") == url.rstrip("/"):
                return name
        return None

    def secret_values(self) -> list[str]:
        """The value of every secret setting, however it was set (environment or `.env`)."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]

    def require(self, *names: str) -> None:
        """Raise :class:`ConfigError` naming the first of `names` left empty."""
        for name in names:
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is required but not set")


def _check_token_source(settings: Settings) -> None:
    """One source of signing tokens, and one only when signatures are checked."""
    given = [
        name
        for name, value in (
            ("AUTH_TOKEN", settings.auth_token.get_secret_value()),
            ("AUTH_TOKEN_FILE", settings.auth_token_file),
            ("AUTH_TOKEN_SECRET_ID", settings.auth_token_secret_id),
        )
        if value
    ]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} are both set: give the tokens one way")
    if settings.auth_enabled and not given:
        raise ValueError(
            "AUTH_TOKEN is required when AUTH_ENABLED=true"
            " (or AUTH_TOKEN_FILE, or AUTH_TOKEN_SECRET_ID)"
        )
    if given and given[0] != "AUTH_TOKEN" and not settings.auth_enabled:
        raise ValueError(f"{given[0]} is set but AUTH_ENABLED is not true: signatures unchecked")


def _check_queues(settings: Settings) -> None:
    """A DLQ that is a request queue would loop permanent failures forever."""
    name = settings.request_queue_setting(settings.sqs_dlq_url)
    if name is not None:
        raise ValueError(
            f"SQS_DLQ_URL is the request queue {name}: permanent failures would come"
            " back forever, and `dlq purge` would empty the live queue"
        )


# The S3 settings that are key prefixes, and those that may name this bucket's objects.
_PREFIXES = (
    "s3_avatar_prefix",
    "s3_subject_prefix",
    "s3_generated_prefix",
    "s3_cancel_prefix",
)
_MODEL_SOURCES = (
    "model_s3_path",
    "ip_adapter_path",
    "ip_adapter_image_encoder_path",
    "vae_path",
    "lora_path",
    "safety_checker_path",
)


def _check_prefixes(settings: Settings) -> None:
    """Users' inputs, outputs, cancellations and model files never share a prefix.

    Each prefix is a separate grant in the template: one inside another would
    let a producer write model files, or a worker read what it must not.
    """
    areas = [(name.upper(), str(getattr(settings, name))) for name in _PREFIXES]
    bucket = f"s3://{settings.s3_bucket_name}/"
    for name in _MODEL_SOURCES:
        value = str(getattr(settings, name))
        if value.startswith(bucket):
            areas.append((name.upper(), value.removeprefix(bucket)))
    # Model files may nest among themselves (a VAE inside the model's folder).
    for index, (name, prefix) in enumerate(areas):
        for other, other_prefix in areas[: min(index, len(_PREFIXES))]:
            if prefix.startswith(other_prefix) or other_prefix.startswith(prefix):
                raise ValueError(
                    f"{name}={prefix!r} and {other}={other_prefix!r} overlap:"
                    " one is a prefix of the other"
                )


def aws_chain_region() -> str:
    """The region when ``AWS_REGION`` is not set, as the AWS chain finds it.

    ``AWS_DEFAULT_REGION``, else the region of the profile (``AWS_PROFILE``,
    else the default one) in the AWS config file, else ``us-east-1``.
    """
    region = os.environ.get("AWS_DEFAULT_REGION", "")
    if not region:
        try:
            region = botocore.session.Session().get_config_variable("region") or ""
        except BotoCoreError:
            # A missing profile is reported by the first AWS call, with its name.
            region = ""
    return str(region) or DEFAULT_REGION


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]).upper()
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def load_settings(*required: str) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` with one line.

    `required` names settings the calling command cannot do without, such as
    ``"sqs_queue_url"`` for `illustrator run`.
    """
    try:
        settings = Settings()
    except ValidationError as error:
        raise ConfigError(f"invalid configuration: {_describe(error)}") from None
    settings.require(*required)
    return settings
