"""What a valid request must also fit before it is admitted: its cost, its
prompt's length in tokens, and its fair-queue group.

Pure checks, each raising :class:`~consumer.errors.InvalidRequest` with a
message that names the limit and the request's own figure. The cost is
:func:`pipeline.api.limits.request_cost`; the token count is the model's
(:meth:`pipeline.api.interface.Generator.prompt_tokens`).
"""

from __future__ import annotations

from consumer.errors import InvalidRequest
from pipeline.api.batch import batch_cost
from pipeline.api.spec import GenerationSpec


def check_cost(spec: GenerationSpec, max_cost: float) -> float:
    """The cost of `spec`; :class:`InvalidRequest` when it passes `max_cost`."""
    cost = batch_cost(spec)
    if cost > max_cost:
        raise InvalidRequest(
            f"the request costs {cost:g} (num_inference_steps x num_images x width x height "
            f"/ 1024^2 = {spec.num_inference_steps} x {spec.num_images} x {spec.width} x "
            f"{spec.height} / 1048576); the limit is {max_cost:g} (MAX_REQUEST_COST): "
            "ask for fewer steps, fewer pictures or a smaller size"
        )
    return cost


def check_prompt_tokens(tokens: int, max_tokens: int) -> None:
    """:class:`InvalidRequest` when a prompt of `tokens` tokens passes `max_tokens`."""
    if tokens > max_tokens:
        raise InvalidRequest(
            f"the prompt with its style prompt is {tokens} tokens of the model's tokenizer; "
            f"the limit is {max_tokens} (MAX_PROMPT_TOKENS)"
        )


def check_group(group: str | None, user_id: str) -> None:
    """:class:`InvalidRequest` when a request was sent in another user's fair-queue group.

    A request without a group (a queue used without fair-queue groups) is
    accepted; one with a group must use its own ``user_id``, so that no
    user can spend another's share of the queue.
    """
    if group is not None and group != user_id:
        raise InvalidRequest(
            "the request was sent with a MessageGroupId that is not its user_id; "
            "send it with MessageGroupId = user_id (or without a group)"
        )
