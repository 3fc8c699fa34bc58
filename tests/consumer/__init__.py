"""Tests of the consumer: contract sections 2 to 5 against moto's server."""
