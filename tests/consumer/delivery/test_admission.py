"""What a valid request must also fit, at the wire: its cost, its prompt's
tokens, its fair-queue group (contract 1.1 and 5)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.aws import Stack
from tests.support.helpers import Observer, eventually, memory, running
from tests.support.recording import blank


async def _outcome(stack: Stack, body: dict[str, Any], group: str | None = None) -> dict[str, Any]:
    stack.put_input("avatars/user1.png")
    observer = Observer(stack)
    generator = blank()
    extra = {} if group is None else {"MessageGroupId": group}
    async with running(generator):
        stack.client("sqs").send_message(
            QueueUrl=stack.queue_url, MessageBody=json.dumps(body), **extra
        )
        (event,) = await observer.wait(1, within=20)
        await eventually(lambda: stack.queue_counts() == (0, 0), what="the request settled")
    if event["status"] == "failed":
        assert generator.calls == []
        (dead,) = stack.receive_all(stack.dlq_url)
        assert dead["MessageAttributes"]["error_code"]["StringValue"] == event["error"]["code"]
    return event


async def test_a_request_over_the_cost_budget_is_refused_with_the_cap_and_its_cost(
    stack: Stack,
) -> None:
    # Every field within its own range: 150 steps of four 1024x1024 pictures.
    body = memory("costly", num_inference_steps=150, num_images=4, width=1024, height=1024)
    event = await _outcome(stack, body)
    assert event["error"]["code"] == "invalid_request"
    assert event["error"]["retryable"] is False
    assert "costs 600" in event["error"]["message"]
    assert "the limit is 200 (MAX_REQUEST_COST)" in event["error"]["message"]


async def test_the_largest_request_within_the_budget_is_drawn(stack: Stack) -> None:
    body = memory("at-cap", num_inference_steps=50, num_images=1, width=2048, height=2048)
    event = await _outcome(stack, body)
    assert event["status"] == "succeeded"


async def test_a_prompt_over_the_token_limit_is_refused(stack: Stack) -> None:
    # 2000 characters of one-letter words and commas: 2000 pieces for any
    # CLIP tokenizer, within the schema's 2000 characters.
    body = memory("wordy", prompt="a," * 1000, style_prompt="")
    event = await _outcome(stack, body)
    assert event["error"]["code"] == "invalid_request"
    assert "MAX_PROMPT_TOKENS" in event["error"]["message"]


async def test_a_long_english_story_fits(stack: Stack) -> None:
    story = ("We drove to the lake every summer, and grandfather told stories. " * 40)[:2000]
    event = await _outcome(stack, memory("story", prompt=story))
    assert event["status"] == "succeeded"


async def test_another_users_fair_queue_group_is_refused(stack: Stack) -> None:
    event = await _outcome(stack, memory("borrowed"), group="someone-else")
    assert event["error"]["code"] == "invalid_request"
    assert "MessageGroupId" in event["error"]["message"]


async def test_the_users_own_group_and_no_group_are_both_accepted(stack: Stack) -> None:
    assert (await _outcome(stack, memory("grouped"), group="user1"))["status"] == "succeeded"
    assert (await _outcome(stack, memory("ungrouped")))["status"] == "succeeded"
