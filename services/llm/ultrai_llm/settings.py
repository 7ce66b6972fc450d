from __future__ import annotations

from shared.settings import ServiceSettings


class LlmSettings(ServiceSettings):
    pass
