"""Delivery: the receive loop, job stages, heartbeat, backoff, the GPU thread, worker state."""
