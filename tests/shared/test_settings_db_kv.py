"""The shared package's building blocks, each on its own."""

from __future__ import annotations

import pytest

from shared.db import normalize_database_url
from shared.kv import KeyValue, MemoryStore, StoreUnavailable
from shared.settings import CorsSettings, ServiceSettings, load_settings
from tests.conftest import redis_prefix


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@host:5432/db", "postgresql+asyncpg://u:p@host:5432/db"),
        ("postgresql://u:p@host/db", "postgresql+asyncpg://u:p@host/db"),
        ("postgresql+asyncpg://u@host/db", "postgresql+asyncpg://u@host/db"),
        ("postgresql://u@host/db?sslmode=require", "postgresql+asyncpg://u@host/db?ssl=require"),
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
    ],
)
def test_database_urls_get_the_async_driver(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


def test_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="mysql"):
        normalize_database_url("mysql://x/y")


def test_bad_setting_stops_with_one_line_naming_it(monkeypatch, capsys) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "lots")
    with pytest.raises(SystemExit) as exit_info:
        load_settings(ServiceSettings, "auth")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("auth: invalid setting: DB_POOL_SIZE")


def test_settings_error_does_not_echo_the_value(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LOG_LEVEL", "s3cr3t-value")
    with pytest.raises(SystemExit):
        load_settings(ServiceSettings, "auth")
    err = capsys.readouterr().err
    assert "LOG_LEVEL" in err
    assert "s3cr3t-value" not in err


def test_cors_settings_name_every_origin_and_match_like_starlette() -> None:
    """The gateway's CORS and auth's session cookie read the same settings: no wildcard, no
    trailing slash, a regex that compiles and must match the whole origin."""
    with pytest.raises(ValueError, match="not allowed with credentials"):
        CorsSettings(cors_origins="https://a.example,*")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        CorsSettings(cors_origin_regex="https://(")
    settings = CorsSettings(cors_origins="https://a.example/", cors_origin_regex=r"https://p-[a-z]+\.example")
    assert settings.cors_origins == ["https://a.example"]
    assert settings.origin_allowed("https://a.example")
    assert settings.origin_allowed("https://p-one.example")
    assert not settings.origin_allowed("https://p-one.example.evil")
    assert not settings.origin_allowed("https://b.example")
    assert not settings.origin_allowed(None)


def test_memory_store_expires_and_evicts() -> None:
    store = MemoryStore(max_entries=2)
    store.set("a", b"1")
    store.set("b", b"2", ttl=-1)  # already expired
    assert store.get("b") is None
    store.set("c", b"3")
    store.set("d", b"4")
    assert store.get("a") is None  # least recently used went first
    assert store.get("d") == b"4"


async def test_kv_without_redis_lives_in_process() -> None:
    kv = KeyValue(None, service="t")
    await kv.set("k", "v", ttl=10)
    assert await kv.get("k") == b"v"
    result = await kv.health_check().probe()
    assert result.status == "warn"


async def test_kv_with_redis_down_falls_back_and_never_raises() -> None:
    # A port nothing listens on: every call must still answer, from process memory.
    kv = KeyValue("redis://127.0.0.1:9/0", service="t", timeout=0.2)
    await kv.set("k", "v", ttl=10)
    assert await kv.get("k") == b"v"
    assert (await kv.health_check().probe()).status == "warn"
    await kv.close()


async def test_kv_uses_redis_when_configured(redis_url) -> None:
    if not redis_url:
        pytest.skip("TEST_REDIS_URL not set")
    kv = KeyValue(redis_url, service="t", prefix=redis_prefix("kv"))
    await kv.set("k", "shared", ttl=10)
    other = KeyValue(redis_url, service="t", prefix=kv.prefix.split(":")[0])
    assert await other.get("k") == b"shared"  # another instance sees it: it is in Redis
    assert (await kv.health_check().probe()).status == "pass"
    await kv.close()
    await other.close()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_kv_deletes_every_key_under_some_prefixes_and_no_other(store: str, redis_url) -> None:
    if store == "redis" and not redis_url:
        pytest.skip("TEST_REDIS_URL not set")
    # A deployment's key prefix may hold what a SCAN pattern reads as a glob: it is matched literally.
    kv = KeyValue(redis_url if store == "redis" else None, service="t", prefix=redis_prefix("kv[a-z]*"))
    neighbour = KeyValue(redis_url if store == "redis" else None, service="t", prefix=kv.prefix[:-3] + "x")
    try:
        names = [f"c:{who}:{n}" for who in ("gone1", "gone2", "kept") for n in range(600)]
        for name in names:
            await kv.set(name, "v", ttl=60)
        await kv.set("other:gone1:0", "v", ttl=60)
        await neighbour.set("c:gone1:0", "v", ttl=60)
        assert await kv.delete_prefixes("c:", ["c:gone1:", "c:gone2:"]) == 1200
        assert [await kv.get(f"c:gone{n}:{i}") for n in (1, 2) for i in (0, 599)] == [None] * 4
        assert await kv.get("c:kept:599") == b"v"
        assert await kv.get("other:gone1:0") == b"v"  # not under "c:"
        assert await neighbour.get("c:gone1:0") == b"v"  # another namespace
        assert await kv.delete_prefixes("c:", ["c:gone1:"]) == 0
        with pytest.raises(ValueError):
            await kv.delete_prefixes("c:", ["other:"])
    finally:
        await kv.close()
        await neighbour.close()


async def test_kv_prefix_deletion_with_redis_down_raises_instead_of_pretending() -> None:
    """An erasure asks it: with Redis away it must fail (and be retried), not report the keys gone."""
    kv = KeyValue("redis://127.0.0.1:9/0", service="t", timeout=0.2)
    try:
        await kv.set("c:gone:1", "v")  # kept in process meanwhile
        with pytest.raises(StoreUnavailable):
            await kv.delete_prefixes("c:", ["c:gone:"])
        assert await kv.get("c:gone:1") is None  # the copy in process went all the same
    finally:
        await kv.close()


def test_each_service_metadata_holds_only_its_own_tables() -> None:
    """The services' models imported in one process (as the test suite does) stay apart: a shared
    declarative registry would put every service's tables in each one's migrations."""
    from ultrai_auth.models import AuthBase
    from ultrai_documents.models import DocumentsBase
    from ultrai_llm.models import LlmBase

    tables = [set(base.metadata.tables) for base in (AuthBase, DocumentsBase, LlmBase)]
    assert all(tables)
    assert not (tables[0] & tables[1]) and not (tables[0] & tables[2]) and not (tables[1] & tables[2])
    assert "users" in tables[0] and "documents" in tables[1] and "llm_usage" in tables[2]
