"""`eventing.tls.verified_context`: a process loads the CA bundle once, however many HTTP
clients it makes (each httpx client would otherwise load it again, ~20 ms of CPU), and the
shared context still verifies certificates and host names."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from eventing import tls
from eventing.publisher import Publisher, PublisherSettings
from tests.broker.events import job_started


@pytest.fixture
def ca_loads(monkeypatch):
    """How many times a default TLS context (the CA bundle read) is made from here on."""
    tls._contexts.clear()
    made = []
    original = ssl.create_default_context

    def counted(*args, **kwargs):
        made.append(kwargs.get("cafile"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    yield made
    tls._contexts.clear()


async def test_many_clients_load_the_ca_bundle_once(ca_loads):
    # Unreachable: each publisher makes its client at its first attempt, which fails at once.
    sink = PublisherSettings(sink="https://127.0.0.1:9/", timeout_s=1)
    publishers = [Publisher(sink) for _ in range(3)]
    assert ca_loads == []  # none made before a publisher sends: a harness starts without it
    for publisher in publishers:
        assert (await publisher.attempt(job_started())).outcome == "retry"
        await publisher.aclose()
    assert len(ca_loads) == 1
    assert tls.has_verified_context()


def test_the_ca_file_the_environment_names_is_used(ca_loads, monkeypatch, tmp_path):
    import certifi

    private_ca = tmp_path / "ca.pem"
    private_ca.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca))
    assert tls.verified_context() is tls.verified_context()
    other_ca = tmp_path / "other.pem"
    other_ca.write_bytes(private_ca.read_bytes())
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))  # another file named: another context
    tls.verified_context()
    monkeypatch.delenv("SSL_CERT_FILE")
    tls.verified_context()
    assert ca_loads == [str(private_ca), str(other_ca), certifi.where()]  # each read once


def test_the_shared_context_verifies():
    context = tls.verified_context()
    assert context is tls.verified_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
