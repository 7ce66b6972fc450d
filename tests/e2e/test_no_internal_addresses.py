"""No internal address ever leaves the gateway, and no route answers with a redirect.

Every route of every service's OpenAPI document is called through the gateway, with and without a
trailing slash, in its documented method, as a signed-in user, with dummy ids in its path: no
answer may be a 3xx (a browser would follow it to the service's own address, where CORS blocks it),
and no header or body may name a service's own address.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.users import bearer, register_and_login

pytestmark = pytest.mark.e2e

SERVICES = ("auth", "documents", "llm")
METHODS = ("get", "post", "put", "patch", "delete")
DUMMY_ID = "0123456789abcdef0123456789abcdef"
_PARAM = re.compile(r"\{[^}]+\}")


def internal_addresses(stack: Any) -> list[str]:
    """Each service's own base URL and host:port, as they could appear in an answer."""
    found: list[str] = []
    for name in SERVICES:
        base = stack.url(name)
        parts = urlsplit(base)
        found += [base, parts.netloc, f"localhost:{parts.port}", f"127.0.0.1:{parts.port}"]
    return sorted(set(found))


def operations(documents: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with dummy ids, operation) for every route; deletions last, so that a
    deletion that succeeded cannot change what the other calls find."""
    ops: dict[tuple[str, str], dict[str, Any]] = {}  # the routes every service has (/live) once
    for document in documents.values():
        for template, item in document["paths"].items():
            path = _PARAM.sub(DUMMY_ID, template)
            for method, op in item.items():
                if method in METHODS:
                    ops.setdefault((method.upper(), path), op)
    return sorted(((m, p, op) for (m, p), op in ops.items()), key=lambda o: (o[0] == "DELETE", o[1], o[0]))


def json_body(op: dict[str, Any]) -> dict[str, Any] | None:
    content = op.get("requestBody", {}).get("content", {})
    return {} if "application/json" in content else None


async def test_no_redirect_and_no_internal_address_on_any_route(stack) -> None:
    addresses = internal_addresses(stack)
    async with httpx.AsyncClient(timeout=30) as client:
        documents = {name: (await client.get(stack.url(name) + "/openapi.json")).json() for name in SERVICES}
    ops = operations(documents)
    assert len(ops) > 20, [f"{m} {p}" for m, p, _ in ops]

    failures: list[str] = []
    async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30, follow_redirects=False) as client:
        _, tokens = await register_and_login(client)
        auth = bearer(tokens["access_token"])
        for method, path, op in ops:
            statuses = []
            for variant in (path, path + "/") if path != "/" else (path,):
                resp = await client.request(method, variant, headers=auth, json=json_body(op))
                statuses.append(resp.status_code)
                call = f"{method} {variant} -> {resp.status_code}"
                if 300 <= resp.status_code < 400:
                    failures.append(f"{call}: redirect to {resp.headers.get('location')}")
                for header, value in resp.headers.multi_items():
                    leaked = [a for a in addresses if a in value]
                    if leaked:
                        failures.append(f"{call}: header {header} names {leaked}")
                body = resp.text
                leaked = [a for a in addresses if a in body]
                if leaked:
                    failures.append(f"{call}: body names {leaked}")
            if len(set(statuses)) > 1:
                failures.append(f"{method} {path}: {statuses[0]} without the trailing slash, {statuses[1]} with it")
    assert failures == [], "\n".join(failures)
