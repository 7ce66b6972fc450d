"""The llm service's routes, one module per resource: ``models``, ``orchestrate`` and ``usage`` under
``PREFIX``; ``openai`` the OpenAI-compatible API under ``/v1``."""

PREFIX = "/api/v1/llm"
