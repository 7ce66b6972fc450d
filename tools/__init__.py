"""Development tooling: running the stack as processes (make dev, the end-to-end tests, bench)."""
