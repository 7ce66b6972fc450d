from shared.net import TrustedProxies, client_address


def scope(peer: str, *xff: str) -> dict:
    return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}


def test_no_trusted_hops_means_the_peer() -> None:
    assert client_address(scope("10.0.0.2", "6.6.6.6")) == "10.0.0.2"


def test_one_hop_takes_what_the_proxy_appended_not_what_the_client_wrote() -> None:
    # The client wrote 6.6.6.6; the trusted proxy appended the address it saw.
    assert client_address(scope("10.0.0.2", "6.6.6.6, 203.0.113.9"), TrustedProxies(hops=1)) == "203.0.113.9"
    assert client_address(scope("10.0.0.2", "6.6.6.6", "203.0.113.9"), TrustedProxies(hops=1)) == "203.0.113.9"


def test_missing_header_falls_back_to_the_peer() -> None:
    assert client_address(scope("10.0.0.2"), TrustedProxies(hops=1)) == "10.0.0.2"


def test_fewer_entries_than_hops_takes_the_leftmost() -> None:
    assert client_address(scope("10.0.0.2", "203.0.113.9"), TrustedProxies(hops=2)) == "203.0.113.9"


def test_networks_read_forwarded_for_only_as_far_as_trusted_proxies() -> None:
    trusted = TrustedProxies.from_networks(["127.0.0.1/32", "10.0.0.0/8"])
    assert client_address(scope("203.0.113.5", "1.2.3.4"), trusted) == "203.0.113.5"  # untrusted peer
    assert client_address(scope("127.0.0.1", "198.51.100.1"), trusted) == "198.51.100.1"
    # A client-written entry left of the real one is not believed:
    assert client_address(scope("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3"), trusted) == "198.51.100.1"
    assert client_address(scope("127.0.0.1", "6.6.6.6", "198.51.100.1"), trusted) == "198.51.100.1"
    assert client_address(scope("127.0.0.1", "not-an-ip, 10.0.0.2"), trusted) == "10.0.0.2"
    assert client_address(scope("127.0.0.1"), trusted) == "127.0.0.1"
