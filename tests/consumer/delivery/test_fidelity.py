"""What the event reports is what was drawn (contract 8.1): job ids, guidance."""

from __future__ import annotations

import json

from tests.support.aws import Stack
from tests.support.helpers import Observer, memory, running
from tests.support.recording import blank


async def test_a_job_id_reused_for_another_request_fails_and_keeps_the_output(
    stack: Stack,
) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    key = "generated/user1/memory_m-1.png"
    async with running(generator):
        stack.send(memory("m-1", prompt="a day at the beach"))
        (first,) = await observer.wait(1)
        before = stack.client("s3").head_object(Bucket=stack.bucket, Key=key)
        # The same fields in another order and spacing: the same request.
        body = memory("m-1", prompt="a day at the beach")
        stack.send(json.dumps(dict(reversed(body.items())), indent=2))
        again = (await observer.wait(2))[1]
        stack.send(memory("m-1", prompt="a day in the mountains"))
        other = (await observer.wait(3))[2]
    assert first["status"] == "succeeded"
    assert first["reused"] is False
    assert again["status"] == "succeeded"
    assert again["reused"] is True
    assert other["status"] == "failed"
    assert other["error"]["code"] == "invalid_request"
    assert other["error"]["retryable"] is False
    assert "already used for a different request" in other["error"]["message"]
    after = stack.client("s3").head_object(Bucket=stack.bucket, Key=key)
    assert after["ETag"] == before["ETag"]
    assert len(before["Metadata"]["request-digest"]) == 64
    assert len(generator.calls) == 1
    assert stack.outputs() == [key]


async def test_an_output_without_a_digest_counts_as_matching(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    stack.client("s3").put_object(
        Bucket=stack.bucket,
        Key="generated/user1/memory_old.png",
        Body=b"\x89PNG",
        Metadata={"job-id": "old", "seed": "5", "model": "m"},
    )
    observer = Observer(stack)
    async with running(blank()):
        stack.send(memory("old", prompt="anything at all"))
        (event,) = await observer.wait(1)
    assert event["status"] == "succeeded"
    assert event["reused"] is True
    assert event["data"][0]["seed"] == 5


async def test_without_guidance_no_negative_prompt_is_used_or_reported(stack: Stack) -> None:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    async with running(generator):
        for job_id, scale in (("g0", 0.0), ("g1", 1.0), ("g2", 1.5)):
            stack.send(memory(job_id, guidance_scale=scale, negative_prompt="blurry"))
        events = await observer.wait(3)
    reported = {e["job_id"]: e["parameters"]["negative_prompt"] for e in events}
    assert reported == {"g0": "", "g1": "", "g2": "blurry"}
    used = {spec.guidance_scale: spec.negative_prompt for spec in generator.calls}
    assert used == {0.0: "", 1.0: "", 1.5: "blurry"}
