"""Helpers shared by the test suites, each defined once."""
