"""Operator tooling behind `illustrator submit`, `dlq` and `health`.

Nothing here runs inside the consumer; these modules talk to the same queues,
topic and bucket from the outside, as AutoBio and the people on call do.
"""
