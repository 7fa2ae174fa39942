"""`eventing.tls.verified_context`: a process loads the CA bundle once, however many HTTP
clients it makes (each httpx client would otherwise load it again, ~20 ms of CPU), and the
shared context still verifies certificates and host names."""

from __future__ import annotations

import ssl

import pytest

from eventing import tls
from eventing.publisher import Publisher, PublisherSettings


@pytest.fixture
def ca_loads(monkeypatch):
    """How many times a default TLS context (the CA bundle read) is made from here on."""
    tls._context.cache_clear()
    made = []
    original = ssl.create_default_context

    def counted(*args, **kwargs):
        made.append(kwargs.get("cafile"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    yield made
    tls._context.cache_clear()


async def test_many_clients_load_the_ca_bundle_once(ca_loads, monkeypatch):
    for name in tls.CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    publishers = [Publisher(PublisherSettings(sink="https://broker.example/")) for _ in range(3)]
    for publisher in publishers:
        await publisher.aclose()
    # A client that trusts the environment shares it too while no CA variable is set.
    assert tls.verified_context() is tls.verified_context(trust_env=False)
    assert len(ca_loads) == 1


def test_a_ca_file_from_the_environment_is_honoured_where_the_client_trusts_it(
    ca_loads, monkeypatch
):
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    assert tls.verified_context() is not tls.verified_context(trust_env=False)
    assert len(ca_loads) == 2  # one from certifi, one from the file the variable names


def test_the_shared_context_verifies():
    context = tls.verified_context(trust_env=False)
    assert context is tls.verified_context(trust_env=False)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
