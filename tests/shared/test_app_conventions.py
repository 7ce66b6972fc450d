"""What every service gets from shared.app.create_app: index, health, errors, request ids, headers,
metrics and body caps; on SQLite, and on PostgreSQL when the tests have one."""

from __future__ import annotations

import logging
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from shared.app import create_app, state_dependency
from shared.db import DbSession, Repository
from shared.errors import ProblemError
from shared.settings import ServiceSettings
from tests.asgi import asgi_client


class Item(BaseModel):
    name: str
    count: int


def make_app(tmp_dir, **settings) -> FastAPI:
    cfg = ServiceSettings(data_dir=tmp_dir, **settings)
    app = create_app("probe", cfg, description="test service", directory={"/items": "items"}, database=True)

    @app.post("/items")
    async def create(item: Item) -> dict:
        return {"ok": item.name}

    @app.get("/items/{item_id}")
    async def get(item_id: int) -> dict:
        if item_id == 0:
            raise ProblemError(404, "No item 0.")
        if item_id == 13:
            raise RuntimeError("secret-internal-detail at /srv/app.py line 13")
        return {"id": item_id}

    return app


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request, pg_databases) -> str | None:
    if request.param == "sqlite":
        return None
    if pg_databases is None:
        pytest.skip("TEST_DATABASE_URL not set")
    return await pg_databases.create("conv")


async def test_index_lists_name_version_environment_and_api(tmp_dir, database_url) -> None:
    async with asgi_client(make_app(tmp_dir, database_url=database_url)) as client:
        body = (await client.get("/")).json()
    assert body["service"] == "probe"
    assert body["environment"] == "development"
    assert body["version"]
    assert body["api"] == {"/items": "items"}


async def test_health_shape_and_statuses(tmp_dir, database_url) -> None:
    async with asgi_client(make_app(tmp_dir, database_url=database_url)) as client:
        live = await client.get("/live")
        ready = await client.get("/ready")
        health = await client.get("/health")
    assert live.status_code == ready.status_code == health.status_code == 200
    assert health.headers["content-type"] == "application/health+json"
    body = health.json()
    # No Redis configured: degraded but serving, so warn (200), not fail.
    assert body["status"] == "warn"
    db_key = "postgres:responseTime" if database_url else "sqlite:responseTime"
    entry = body["checks"][db_key][0]
    assert entry["status"] == "pass"
    assert entry["observedUnit"] == "ms"
    assert isinstance(entry["observedValue"], float)
    assert body["checks"]["redis:responseTime"][0]["status"] == "warn"
    # readiness runs only what the service cannot work without
    assert set(ready.json()["checks"]) == {db_key}


async def test_database_down_fails_readiness_but_not_liveness(tmp_dir) -> None:
    app = make_app(tmp_dir, database_url="postgresql://nobody@127.0.0.1:9/none", db_pool_timeout=1)
    async with asgi_client(app) as client:
        live = await client.get("/live")
        ready = await client.get("/ready")
    assert live.status_code == 200
    assert ready.status_code == 503
    assert ready.headers["retry-after"]
    body = ready.json()
    assert body["status"] == "fail"
    output = body["checks"]["postgres:responseTime"][0]["output"]
    assert "127.0.0.1" not in output and "nobody" not in output


async def test_validation_error_is_problem_json_naming_the_field(tmp_dir) -> None:
    async with asgi_client(make_app(tmp_dir)) as client:
        resp = await client.post("/items", json={"name": "x", "count": "many"})
    assert resp.status_code == 422
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 422
    assert "count" in body["detail"]
    assert body["request_id"] == resp.headers["x-request-id"]
    assert "many" not in resp.text  # the rejected input is not echoed


async def test_not_found_and_raised_problems(tmp_dir) -> None:
    async with asgi_client(make_app(tmp_dir)) as client:
        missing = await client.get("/nowhere")
        raised = await client.get("/items/0")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    assert raised.json()["detail"] == "No item 0."


async def test_unhandled_error_has_no_trace_or_detail(tmp_dir, caplog) -> None:
    app = make_app(tmp_dir)
    async with asgi_client(app, raise_app_exceptions=False) as client:
        with caplog.at_level(logging.ERROR):
            resp = await client.get("/items/13")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert "secret-internal-detail" not in resp.text
    assert "Traceback" not in resp.text
    assert resp.json()["request_id"]


async def test_request_id_is_kept_minted_or_replaced(tmp_dir) -> None:
    async with asgi_client(make_app(tmp_dir)) as client:
        kept = await client.get("/live", headers={"X-Request-ID": "abc-123"})
        minted = await client.get("/live")
        hostile = await client.get("/live", headers={"X-Request-ID": "x" * 500})
    assert kept.headers["x-request-id"] == "abc-123"
    assert len(minted.headers["x-request-id"]) == 32
    assert hostile.headers["x-request-id"] != "x" * 500


async def test_security_headers_on_every_response(tmp_dir) -> None:
    async with asgi_client(make_app(tmp_dir)) as client:
        for resp in (await client.get("/"), await client.get("/nowhere"), await client.post("/items", json={})):
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["x-frame-options"] == "DENY"
            assert "default-src 'none'" in resp.headers["content-security-policy"]


async def test_body_over_the_cap_is_refused_declared_or_chunked(tmp_dir) -> None:
    big = b"{" + b" " * 1_100_000 + b"}"

    async def chunks():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    async with asgi_client(make_app(tmp_dir)) as client:
        declared = await client.post("/items", content=big, headers={"content-type": "application/json"})
        chunked = await client.post("/items", content=chunks(), headers={"content-type": "application/json"})
    for resp in (declared, chunked):
        assert resp.status_code == 413
        assert resp.headers["content-type"] == "application/problem+json"


async def test_metrics_by_route_template(tmp_dir) -> None:
    async with asgi_client(make_app(tmp_dir)) as client:
        await client.get("/items/5")
        await client.get("/items/6")
        text = (await client.get("/metrics")).text
    assert 'route="/items/{item_id}"' in text
    assert 'route="/items/5"' not in text


async def test_a_value_the_database_refuses_is_a_422(tmp_dir, database_url) -> None:
    from sqlalchemy import text

    app = make_app(tmp_dir, database_url=database_url)

    @app.get("/echo")
    async def echo(value: str) -> dict:
        async with app.state.db.sessions() as session:
            row = (
                await session.execute(text("SELECT CAST(:v AS INTEGER) + 0, :s"), {"v": "x" * 3, "s": value})
            ).first()
        return {"row": list(row)}

    async with asgi_client(app, raise_app_exceptions=False) as client:
        resp = await client.get("/echo", params={"value": "nul\x00byte"})
    # PostgreSQL refuses both the NUL and the cast; SQLite casts 'xxx' to 0 and stores the NUL.
    if database_url:
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
    else:
        assert resp.status_code == 200


async def test_405_allows_the_methods_of_every_route_on_the_path(tmp_dir) -> None:
    app = make_app(tmp_dir)

    @app.delete("/items/{item_id}")
    async def delete(item_id: int) -> dict:
        return {"deleted": item_id}

    async with asgi_client(app) as client:
        resp = await client.put("/items/5")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert set(resp.headers["allow"].split(", ")) == {"GET", "DELETE"}


async def test_a_missing_file_is_not_reported_as_a_database_outage(tmp_dir) -> None:
    """A FileNotFoundError (a file left out of a deploy) once answered 503 "database unavailable",
    hiding the real fault: it is a 500 like any other bug."""
    app = make_app(tmp_dir)

    @app.get("/file")
    async def read() -> dict:
        (tmp_dir / "not-there.txt").read_text()
        return {}

    async with asgi_client(app, raise_app_exceptions=False) as client:
        resp = await client.get("/file")
    assert resp.status_code == 500


# At module level: the handler's annotations are strings, resolved in this module's globals.
StateSettings = Annotated[ServiceSettings, Depends(state_dependency("settings", ServiceSettings))]
StateKv = Annotated[object, Depends(state_dependency("kv", object))]
RequestRepository = Annotated[Repository, Depends(Repository.on_request)]


async def test_a_state_dependency_gives_what_the_app_holds_and_is_no_parameter(tmp_dir) -> None:
    """``state_dependency`` reads ``app.state`` per request (the lifespan's key-value store, the
    settings) and adds nothing to the API document."""
    app = make_app(tmp_dir)

    @app.get("/state")
    async def state(settings: StateSettings, again: StateSettings, kv: StateKv) -> dict:
        return {"same": settings is again is app.state.settings, "kv": kv is app.state.kv}

    async with asgi_client(app) as client:
        resp = await client.get("/state")
    assert resp.json() == {"same": True, "kv": True}
    assert "parameters" not in app.openapi()["paths"]["/state"]["get"]


async def test_a_repository_works_on_the_request_s_one_session(tmp_dir, database_url) -> None:
    """``Repository.on_request`` builds the repository on the same session as every other
    dependency of the request (and its session is no parameter of the API)."""
    app = make_app(tmp_dir, database_url=database_url)

    @app.get("/repository")
    async def repository(repo: RequestRepository, session: DbSession) -> dict:
        await repo.release()
        return {"same": repo.session is session}

    async with asgi_client(app) as client:
        resp = await client.get("/repository")
    assert resp.json() == {"same": True}
    assert "parameters" not in app.openapi()["paths"]["/repository"]["get"]


async def test_without_traces_a_request_asks_opentelemetry_for_no_provider(tmp_path, monkeypatch) -> None:
    from opentelemetry import metrics, trace
    from opentelemetry._logs import _internal as logs

    asked: list[str] = []
    getters = ((trace, "get_tracer_provider"), (metrics, "get_meter_provider"), (logs, "get_logger_provider"))
    for module, name in getters:
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda o=original, n=name: asked.append(n) or o())
    async with asgi_client(make_app(tmp_path)) as client:
        asked.clear()  # whatever start-up asked
        assert (await client.get("/items/5")).status_code == 200
    assert asked == []
