"""The S3 keys of contract section 2, as pure functions."""

from __future__ import annotations

from consumer.contract.request import Request, input_prefix
from consumer.settings import GenerationDefaults
from pipeline.api.spec import JobKind

INPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def input_candidates(request: Request, defaults: GenerationDefaults) -> list[str]:
    """The keys to try for a job's input image, in order.

    The request's ``image_key`` when given, else the user's picture under the
    kind's prefix with each accepted extension.
    """
    if request.image_key is not None:
        return [request.image_key]
    prefix = input_prefix(request.kind, defaults)
    return [f"{prefix}{request.user_id}{ext}" for ext in INPUT_EXTENSIONS]


def output_key(
    defaults: GenerationDefaults, user_id: str, kind: JobKind, job_id: str, index: int = 0
) -> str:
    """Where picture `index` of a job goes; it depends on the request alone
    (idempotency): ``<kind>_<job_id>.png`` for the first, ``<kind>_<job_id>.<index>.png``
    after it.

    A job id has no ``.`` (``[A-Za-z0-9_-]``), so no two pairs of job id and
    index share a key: picture 1 of job ``a`` is ``memory_a.1.png``, picture 0
    of job ``a_1`` is ``memory_a_1.png``.
    """
    suffix = f".{index}" if index else ""
    return f"{defaults.s3_generated_prefix}{user_id}/{kind.value}_{job_id}{suffix}.png"


def output_keys(
    defaults: GenerationDefaults, user_id: str, kind: JobKind, job_id: str, count: int
) -> list[str]:
    """The keys of a job's `count` pictures, in order."""
    return [output_key(defaults, user_id, kind, job_id, i) for i in range(count)]


def earlier_output_key(
    defaults: GenerationDefaults, user_id: str, kind: JobKind, job_id: str, index: int
) -> str:
    """Where earlier releases wrote picture `index` ≥ 1: ``<kind>_<job_id>_<index>.png``.

    Ambiguous (picture 0 of job ``a_1`` has the same key), so an object found
    there is the job's only when its ``job-id`` metadata names the job.
    """
    if index < 1:
        raise ValueError("picture 0 kept its key")
    return f"{defaults.s3_generated_prefix}{user_id}/{kind.value}_{job_id}_{index}.png"


def cancel_key(prefix: str, user_id: str, job_id: str) -> str:
    """Where AutoBio writes a job's cancellation marker: ``<prefix><user_id>/<job_id>``.

    `prefix` is ``S3_CANCEL_PREFIX``; the ids are the request's, which the
    request's rules keep to ``[A-Za-z0-9_-]``.
    """
    return f"{prefix}{user_id}/{job_id}"


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"
