"""The OpenAI-compatible HTTP API in front of the inference and judge services."""
