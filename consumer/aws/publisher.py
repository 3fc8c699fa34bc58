"""The completion topic (SNS): completion and started events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer.contract.event import CompletionEvent, StartedEvent

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient


class Publisher:
    """Publishes events to `topic_arn` with their filter attributes."""

    def __init__(self, sns: SNSClient, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    async def publish(self, event: CompletionEvent | StartedEvent) -> str:
        """Publish `event`; return SNS's message id."""
        response = await self.sns.publish(
            TopicArn=self.topic_arn,
            Message=event.to_json(),
            MessageAttributes=event.attributes(),  # type: ignore[arg-type]
        )
        return response["MessageId"]
