"""`illustrator run` as a process: signals, a crash, configuration errors."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running
from tests.support.recording import blank

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def consumer(
    tmp_path: Path, *, command: Sequence[str] = ("-m", "consumer", "run"), **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """`python -m consumer run` (or `command`) on the stack in the environment, logs to a file."""
    environment = {
        **os.environ,
        "MODEL_PATH": "builtin:blank",
        "HEALTH_HOST": "127.0.0.1",
        "HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
        "WORKER_ID": "proc-worker",
        "PYTHONPATH": str(ROOT),
        **env,
    }
    log_path = tmp_path / f"consumer-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, *command], env=environment, stdout=log, stderr=log
        )
        try:
            with log_path.open("rb") as reader:
                yield process, reader
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            print(log_path.read_text())  # shown by pytest when a test fails


def _log_events(reader: IO[bytes]) -> list[dict[str, Any]]:
    reader.seek(0)
    events = []
    for line in reader.read().decode().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def _exit(process: subprocess.Popen[bytes], within: float = 20) -> int:
    return int(
        await eventually(
            lambda: process.poll() is not None, within=within, what="the process to exit"
        )
        and process.returncode
    )


async def test_sigterm_mid_job_finishes_it_and_exits_zero(stack: Stack, tmp_path: Path) -> None:
    stack.put_input("avatars/user1.png")
    port = _free_port()
    observer = Observer(stack)
    with consumer(tmp_path, BLANK_LATENCY_MS="1500", HEALTH_PORT=str(port)) as (process, reader):
        await eventually(lambda: _health(port) == 200, within=30, what="healthy")
        stack.send(memory("term-1"))
        stack.send(memory("term-2"))
        await eventually(lambda: stack.queue_counts() == (0, 2), what="one running, one prefetched")
        await eventually(lambda: _started(reader), what="the generation to start")
        process.send_signal(signal.SIGTERM)
        assert await _exit(process) == 0
    (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert event["worker_id"] == "proc-worker"
    # The prefetched request went back at once; the running one finished.
    assert stack.queue_counts() == (1, 0)
    assert len(stack.outputs()) == 1


async def test_sigterm_past_the_drain_timeout_releases_the_job(
    stack: Stack, tmp_path: Path
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    # SQS (and moto) go on serving an interrupted long poll, which may take the
    # released request and hide it for the receive hold, here 3 s.
    env = {"BLANK_LATENCY_MS": "60000", "DRAIN_TIMEOUT_S": "0.5", "VISIBILITY_TIMEOUT_S": "3"}
    with consumer(tmp_path, **env) as (process, reader):
        stack.send(memory("term-slow"))
        await eventually(lambda: stack.queue_counts() == (0, 1), within=30, what="running")
        await eventually(lambda: _started(reader), what="the generation to start")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await _exit(process) == 0
        assert time.monotonic() - started < 10
        names = [e["event"] for e in _log_events(reader)]
    assert "drain_timeout" in names
    await eventually(lambda: stack.queue_counts() == (1, 0), within=6, what="released")
    assert await observer.settle(0.3) == []


async def test_sigkill_mid_job_then_another_consumer_finishes_it_once(
    make_env_stack: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = make_env_stack(visibility_timeout=2)
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    with consumer(tmp_path, BLANK_LATENCY_MS="60000") as (process, reader):
        stack.send(memory("kill-1"))
        await eventually(lambda: _started(reader), within=30, what="the generation to start")
        process.send_signal(signal.SIGKILL)
        assert await _exit(process) == -signal.SIGKILL
    # Nothing extends the request any more: it returns within the visibility timeout.
    killed_at = time.monotonic()
    generator = blank()
    async with running(generator):
        (event,) = await observer.wait(1, within=20)
    assert time.monotonic() - killed_at < 10
    assert event["status"] == "succeeded"
    # 2, or 3 when the dead process's interrupted long poll took it once more.
    # One vanished worker costs nothing; only repeated ones cost an attempt.
    assert event["attempts"] == 1
    assert event["worker_id"] == "test-worker"
    assert len(generator.calls) == 1
    assert stack.outputs() == ["generated/user1/memory_kill-1.png"]


def test_missing_queue_url_exits_two_with_one_line(stack: Stack, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SQS_QUEUE_URL": ""}
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "illustrator: SQS_QUEUE_URL is required but not set"


async def test_secrets_never_reach_the_logs(stack: Stack, tmp_path: Path) -> None:
    secret = "a-secret-that-must-not-leak"
    stack.put_input("avatars/user1.png")
    env = {"AUTH_ENABLED": "true", "AUTH_TOKEN": secret, "LOG_LEVEL": "debug"}
    observer = Observer(stack)
    with consumer(tmp_path, **env) as (process, reader):
        stack.send(memory("unsigned-1"))
        stack.send(memory("wrongly-signed-1"), token="not-the-secret")
        stack.send(memory("signed-1"), token=secret)
        await observer.wait(3, within=30)
        process.send_signal(signal.SIGINT)
        assert await _exit(process) == 0
        reader.seek(0)
        text = reader.read().decode()
    logged = _log_events(reader_of(text))
    failed = [e for e in logged if e["event"] == "job_failed"]
    # An unverified body names nobody, in the logs either.
    assert [(e["job_id"], e["user_id"]) for e in failed] == [(None, None)] * 2
    assert "unsigned-1" not in text
    assert "wrongly-signed-1" not in text
    assert {e["error_code"] for e in failed} == {"unauthorized"}
    # A verified job's lines carry its ids, bound once for the life of the job.
    assert any(e["event"] == "job_succeeded" and e["job_id"] == "signed-1" for e in logged)
    assert secret not in text
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text


def reader_of(text: str) -> IO[bytes]:
    return io.BytesIO(text.encode())


def _started(reader: IO[bytes]) -> bool:
    return any(e["event"] == "generation_started" for e in _log_events(reader))


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


# The tiny model at a size and step count that runs for several seconds on a CPU.
TINY = {"MODEL_PATH": "builtin:tiny", "WARMUP": "false", "VISIBILITY_TIMEOUT_S": "3"}
LONG = {"num_inference_steps": 150, "width": 128, "height": 128}
ABORT = "terminate called"

# A consumer whose generator never returns and ignores its stop (a wedged
# GPU), with a short stop grace: `run` builds its WorkerOptions with it.
WEDGED = """
import functools, sys, threading
import consumer.delivery.options as options
import pipeline.builtin.blank as blank
options.WorkerOptions = functools.partial(options.WorkerOptions, stop_grace_s=1.0)
def generate(self, spec, image, stop=None):
    threading.Event().wait(3600)
blank.BlankGenerator.generate = generate
from consumer.cli.main import main
sys.exit(main(["run"]))
"""


def _logged(reader: IO[bytes], name: str) -> bool:
    return any(e["event"] == name for e in _log_events(reader))


def _text(reader: IO[bytes]) -> str:
    reader.seek(0)
    return reader.read().decode()


async def _stopped_cleanly(stack: Stack, observer: Observer, reader: IO[bytes]) -> None:
    """The request is back on the queue, nothing was written or reported, no abort."""
    assert ABORT not in _text(reader)
    await eventually(lambda: stack.queue_counts() == (1, 0), within=10, what="released")
    assert stack.outputs() == []
    assert await observer.settle(0.3) == []


@pytest.mark.parametrize(
    ("drain_timeout_s", "signals", "logged"),
    [
        # A SIGTERM drains; the drain runs out while the generation goes on.
        ("0.5", [signal.SIGTERM], ["drain_timeout"]),
        # A second signal during the drain means now.
        ("600", [signal.SIGTERM, signal.SIGINT], ["drain_requested"]),
    ],
    ids=["past-the-drain-timeout", "second-signal"],
)
async def test_tiny_generation_is_stopped_by_a_shutdown(
    stack: Stack,
    tmp_path: Path,
    drain_timeout_s: str,
    signals: list[signal.Signals],
    logged: list[str],
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    with consumer(tmp_path, **TINY, DRAIN_TIMEOUT_S=drain_timeout_s) as (process, reader):
        stack.send(memory("tiny-stop", **LONG))
        await eventually(lambda: _started(reader), within=40, what="the generation to start")
        *firsts, last = signals
        for first in firsts:
            process.send_signal(first)
            await eventually(lambda: _logged(reader, "drain_requested"), what="the drain")
        process.send_signal(last)
        assert await _exit(process) == 0
        for name in [*logged, "generation_stopped"]:
            assert _logged(reader, name), name
        await _stopped_cleanly(stack, observer, reader)


async def test_tiny_generation_past_its_deadline_stops_the_worker_and_charges_a_death(
    stack: Stack, tmp_path: Path
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    env = {**TINY, "GENERATION_TIMEOUT_S": "1"}
    with consumer(tmp_path, **env) as (process, reader):
        stack.send(memory("tiny-late", **LONG))
        # A request within budget past its deadline: the worker's fault.
        assert await _exit(process, within=60) == 1
        (failed,) = [e for e in _log_events(reader) if e["event"] == "job_failed"]
        assert failed["error_code"] == "generation_failed"
        assert failed["severity"] == "fatal"
        (handed,) = [e for e in _log_events(reader) if e["event"] == "job_handed_on"]
        assert handed["worker_deaths"] == 1
        await _stopped_cleanly(stack, observer, reader)


async def test_wedged_gpu_past_the_deadline_exits_one(stack: Stack, tmp_path: Path) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    env = {"GENERATION_TIMEOUT_S": "0.5", "VISIBILITY_TIMEOUT_S": "3"}
    with consumer(tmp_path, command=("-c", WEDGED), **env) as (process, reader):
        stack.send(memory("wedged-proc"))
        assert await _exit(process, within=30) == 1
        fatal = [e for e in _log_events(reader) if e["event"] == "worker_fatal"]
        assert "wedged" in fatal[0]["reason"]
        await _stopped_cleanly(stack, observer, reader)


def _metric(port: int, line: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return line in response.read().decode()


async def test_sighup_reads_the_style_catalog_again_and_keeps_it_unless_all_valid(
    stack: Stack, tmp_path: Path
) -> None:
    from tests.support.lora_headers import diffusers_lora

    stack.put_input("avatars/user1.png")
    diffusers_lora(tmp_path / "ink.safetensors")
    diffusers_lora(tmp_path / "text.safetensors", text_encoder=True)
    catalog = tmp_path / "styles.yaml"
    styles = "styles:\n  ink: {lora: ink.safetensors}\n"
    catalog.write_text(styles)
    port = _free_port()
    observer = Observer(stack)
    env = {"STYLES_PATH": str(catalog), "HEALTH_PORT": str(port)}
    with consumer(tmp_path, **env) as (process, reader):
        await eventually(lambda: _health(port) == 200, within=30, what="healthy")
        stack.send(memory("oil-before", style="oil"))
        catalog.write_text(styles + "  oil: {style_prompt: oils}\n")
        await observer.wait(1)
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: _logged(reader, "styles_reloaded"), what="the reload")
        stack.send(memory("oil-after", style="oil"))
        await observer.wait(2)
        # Every style must be valid, or none is taken: oil stays.
        catalog.write_text("styles:\n  ink: {lora: text.safetensors}\n")
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: _logged(reader, "styles_reload_refused"), what="the refusal")
        stack.send(memory("oil-kept", style="oil"))
        events = {e["job_id"]: e for e in await observer.wait(3)}
        for outcome in ("applied", "refused"):
            expected = f'illustrator_style_catalog_reloads_total{{outcome="{outcome}"}} 1.0'
            assert _metric(port, expected), outcome
        process.send_signal(signal.SIGTERM)
        assert await _exit(process) == 0
        [refused] = [e for e in _log_events(reader) if e["event"] == "styles_reload_refused"]
    assert "style 'ink': it has 2 text-encoder tensors" in refused["error"]
    assert events["oil-before"]["error"]["message"] == "unknown style 'oil'; styles: ink"
    for job_id in ("oil-after", "oil-kept"):
        assert events[job_id]["status"] == "succeeded"
        assert events[job_id]["parameters"]["style"] == "oil"
        assert events[job_id]["parameters"]["style_prompt"] == "oils"
