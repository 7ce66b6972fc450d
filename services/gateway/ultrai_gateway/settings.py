from __future__ import annotations

from functools import cached_property

from pydantic import Field

from shared.net import TrustedProxies
from shared.settings import CorsSettings, ServiceURL


class GatewaySettings(CorsSettings):
    auth_url: ServiceURL = "http://127.0.0.1:8001"
    documents_url: ServiceURL = "http://127.0.0.1:8002"
    llm_url: ServiceURL = "http://127.0.0.1:8003"

    # Proxies in front of the gateway that append to X-Forwarded-For: 1 on Render (its edge), 0 locally.
    trusted_proxy_hops: int = Field(0, ge=0, le=5)
    # The edge token check (ultrai_gateway/edge.py); off only for tests of the proxy against fake upstreams.
    edge_auth: bool = True

    # Requests per client address through the gateway (0 turns a limit off). Health, docs and
    # metrics of the gateway itself are not counted.
    rate_limit_per_minute: int = Field(600, ge=0)
    rate_limit_per_hour: int = Field(20_000, ge=0)

    # Request bodies are capped at the edge too, counted as they stream through (the services check
    # again): uploads on POST /api/v1/documents, everything else at MAX_BODY_BYTES.
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_upload_bytes: int = Field(25 * 1_048_576, ge=1024)
    upload_overhead_bytes: int = Field(64 * 1024, ge=1024)

    # Slow and greedy clients (ultrai_gateway/server.py): seconds for the request line and headers;
    # the slowest request body accepted, averaged over a window; open connections per worker.
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    body_min_bytes_per_second: float = Field(1024.0, ge=0)
    body_rate_window_seconds: float = Field(10.0, gt=0, le=300)
    max_connections: int = Field(900, ge=1, le=100_000)

    health_timeout: float = Field(1.5, gt=0, le=30)
    upstream_connect_timeout: float = Field(1.0, gt=0, le=30)
    upstream_read_timeout: float = Field(300.0, gt=0, le=3600)
    upstream_max_connections: int = Field(200, ge=1, le=10_000)
    # Seconds a request waits for a free pooled connection to its service before a quick 503.
    upstream_pool_timeout: float = Field(2.0, gt=0, le=60)
    # Long-lived requests (uploads, event streams, WebSockets) one account may have open at once, on every
    # gateway instance together (Redis); one more gets 429.
    max_streams_per_user: int = Field(10, ge=1, le=10_000)
    # Seconds a WebSocket through the gateway may pass no message either way before it is closed (4408).
    websocket_idle_seconds: float = Field(300.0, gt=0, le=86_400)

    @cached_property
    def proxies(self) -> TrustedProxies:
        return TrustedProxies(hops=self.trusted_proxy_hops)
