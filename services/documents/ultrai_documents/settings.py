from __future__ import annotations

from shared.settings import ServiceSettings


class DocumentsSettings(ServiceSettings):
    pass
