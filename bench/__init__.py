"""Benchmarks of the service: the queue path against a sequential baseline,
scale-out over several consumers, and the pipeline on the CPU.

`python -m bench` (or `make bench`) runs them one after the other, writes
``bench/results/*.json`` and the plots, and refreshes ``docs/benchmarks.md``.
Everything runs on loopback: moto's server stands in for SQS, SNS and S3.
"""
