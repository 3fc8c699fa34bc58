"""Consumer: SQS in, S3 and SNS out, the contract, the CLI and the health sidecar."""
