"""Each service's OpenAPI document is the one recorded in tests/openapi/: a restructuring that moves
code keeps the API as it was, and a deliberate API change records the new document
(``python -m tools.openapi --write``) in the same commit, where review sees it."""

from __future__ import annotations

import pytest

from tools.openapi import differences, document
from tools.stack import SERVICES


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_openapi_document_is_the_recorded_one(service: str) -> None:
    diff = differences(service, document(service))
    assert not diff, "\n".join(diff[:40])
