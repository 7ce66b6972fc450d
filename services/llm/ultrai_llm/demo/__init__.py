"""Offline demo models: deterministic answers computed from the text of the prompt, offered through
litellm as a custom provider so that they take the same path as a real model (Router, streaming,
usage, cache, cost). ``text`` holds how an answer is made; ``provider`` the litellm side."""
