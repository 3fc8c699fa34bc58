"""The running worker wired together: the service, the health sidecar, the lifecycle watch."""
