from shared.net import client_address


def scope(peer: str, *xff: str) -> dict:
    return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}


def test_no_trusted_hops_means_the_peer() -> None:
    assert client_address(scope("10.0.0.2", "6.6.6.6")) == "10.0.0.2"


def test_one_hop_takes_what_the_proxy_appended_not_what_the_client_wrote() -> None:
    # The client wrote 6.6.6.6; the trusted proxy appended the address it saw.
    assert client_address(scope("10.0.0.2", "6.6.6.6, 203.0.113.9"), trusted_hops=1) == "203.0.113.9"
    assert client_address(scope("10.0.0.2", "6.6.6.6", "203.0.113.9"), trusted_hops=1) == "203.0.113.9"


def test_missing_header_falls_back_to_the_peer() -> None:
    assert client_address(scope("10.0.0.2"), trusted_hops=1) == "10.0.0.2"


def test_fewer_entries_than_hops_takes_the_leftmost() -> None:
    assert client_address(scope("10.0.0.2", "203.0.113.9"), trusted_hops=2) == "203.0.113.9"
