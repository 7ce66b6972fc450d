"""Logging: JSON lines in production, readable lines in development, every record with the request id.

A filter scrubs passwords, bearer tokens, JWTs and API keys from every message before it is written.
"""

from __future__ import annotations

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from shared import tracing
from shared.context import current_request_id

_SECRET_PATTERNS = [
    # Authorization headers and bearer tokens
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    # JWTs anywhere (three base64url segments starting with eyJ)
    (re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # key=value or "key": "value" for secret-looking keys (ticket: ?ticket= of an event stream)
    (
        re.compile(
            r"(?i)([\"']?(?:password|passwd|secret|token|ticket|api[_-]?key|refresh_token|access_token|authorization)"
            r"[\"']?\s*[:=]\s*[\"']?)([^\"'\s,}&]+)"
        ),
        r"\1[redacted]",
    ),
    # our own API keys (uai_<id>_<secret>), wherever they appear
    (re.compile(r"uai_[A-Za-z0-9]+_[A-Za-z0-9_-]+"), "[redacted-key]"),
    # provider API keys (sk-..., sk-ant-..., gsk_..., AIza...)
    (re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|gsk_[A-Za-z0-9]{8,}|AIza[A-Za-z0-9_-]{20,})"), "[redacted-key]"),
]


def redact(text: str) -> str:
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class ContextFilter(logging.Filter):
    """Adds the service name and request id, and scrubs secrets from the rendered message."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = current_request_id() or "-"
        record.trace_id = tracing.current_trace_id()
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        return True


def configure_logging(service: str, level: str = "INFO", json_logs: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(service))
    # With traces exported, the trace id stands beside the request id on every line.
    ids = "%(request_id)s %(trace_id)s" if tracing.enabled() else "%(request_id)s"
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                f"%(asctime)s %(levelname)s %(name)s %(message)s %(service)s {ids}",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s %(service)s [{ids}] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's own loggers go through ours; its access log is replaced by our middleware's.
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("httpx", "httpx2", "httpcore", "aiosqlite", "asyncio", "LiteLLM", "litellm"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
