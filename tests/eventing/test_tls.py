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
    tls.verified_context.cache_clear()
    made = []
    original = ssl.create_default_context

    def counted(*args, **kwargs):
        made.append(kwargs.get("cafile"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    yield made
    tls.verified_context.cache_clear()


async def test_many_clients_load_the_ca_bundle_once(ca_loads):
    publishers = [Publisher(PublisherSettings(sink="https://broker.example/")) for _ in range(3)]
    for publisher in publishers:
        await publisher.aclose()
    assert len(ca_loads) == 1


def test_the_shared_context_verifies():
    context = tls.verified_context(trust_env=False)
    assert context is tls.verified_context(trust_env=False)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
