"""A token the gateway verified before is answered from its cache of verified tokens, with Redis as
in production; the edge's decisions must stay those of a full check: a revoked token is refused on
the very next request, and every request is counted against the limit."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import TEST_REDIS_URL
from tests.support.users import bearer, register_and_login

pytestmark = pytest.mark.e2e

PAST_THE_EDGE = "/api/v1/documents/doc_1"


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    if not TEST_REDIS_URL:
        pytest.skip("needs TEST_REDIS_URL: revocations and limits shared in Redis, as deployed")


async def test_a_token_accepted_before_is_refused_on_the_next_request_after_logout(make_stack) -> None:
    # The documents service is not running: a request the edge check lets through is a 503, so a 401
    # is the gateway's own refusal (auth's /me would refuse a revoked token by itself).
    st = await make_stack(names=("auth", "gateway"))
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
        _, tokens = await register_and_login(client)
        token = tokens["access_token"]
        for _ in range(3):  # verified once, then answered from the gateway's cache of verified tokens
            assert (await client.get(PAST_THE_EDGE, headers=bearer(token))).status_code == 503
        resp = await client.post(
            "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=bearer(token)
        )
        assert resp.status_code == 204, resp.text
        refused = await client.get(PAST_THE_EDGE, headers=bearer(token))
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["detail"]


async def test_every_request_of_a_known_token_counts_against_the_limit(make_stack) -> None:
    st = await make_stack(names=("auth", "gateway"), env={"RATE_LIMIT_PER_MINUTE": "8"})
    async with httpx.AsyncClient(base_url=st.url("gateway"), timeout=30) as client:
        _, tokens = await register_and_login(client)  # two requests: register, login
        codes = [
            (await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))).status_code for _ in range(8)
        ]
        refused = await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert codes == [200] * 6 + [429] * 2, codes
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-policy"] == "8;w=60"
