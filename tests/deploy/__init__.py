"""Readers of compose.yaml and the Dockerfile, for the tests of the Docker deployment."""
