"""Stream chunks built by pydantic's validator instead of the ``openai`` SDK's Python constructor.

litellm streams an OpenAI-compatible provider's answer through the ``openai`` SDK, which builds each
chunk (a ``ChatCompletionChunk``) from its JSON with ``construct_type``: a walk over the model's type
hints in Python, about 45 us a chunk, nearly half of the event loop's CPU per streamed chunk (a
profile of long streamed answers through ``Engine._stream``). pydantic's validator (in Rust) builds
an equal object from the same JSON in about 2 us.

So ``_process_response_data`` of the SDK's clients validates a chunk first, and only when the chunk
does not conform (a provider's own field values, which validation refuses and ``construct_type``
keeps as they are) falls back to the SDK's own construction: what conforms is built equal to
before, and what does not is built exactly as before. Every other type, and a client with strict
response validation, is the SDK's as it was.
"""

from __future__ import annotations

from typing import Any

import pydantic
from openai._base_client import BaseClient
from openai.types.chat import ChatCompletionChunk

_original = BaseClient._process_response_data


def _process_response_data(self: Any, *, data: object, cast_to: Any, response: Any) -> Any:
    if cast_to is ChatCompletionChunk and isinstance(data, dict) and not self._strict_response_validation:
        try:
            return ChatCompletionChunk.model_validate(data)
        except pydantic.ValidationError:
            pass  # built the SDK's way below, as it always was
    return _original(self, data=data, cast_to=cast_to, response=response)


def install() -> None:
    BaseClient._process_response_data = _process_response_data  # type: ignore[method-assign]


def uninstall() -> None:
    """The SDK's own construction again (for a benchmark's baseline)."""
    BaseClient._process_response_data = _original  # type: ignore[method-assign]


def installed() -> bool:
    return BaseClient._process_response_data is _process_response_data
