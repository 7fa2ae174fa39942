"""CloudEvents over HTTP (`eventing.codec`): every catalogue type round-trips through binary and
structured mode with its extensions; malformed requests are refused with one error type and a
stable code; what we encode is what a functions-framework CloudEvent target receives; and no
module but the codec may import the CloudEvents SDK."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import eventing.events as ev
from eventing import codec

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "events"
TYPES = sorted(ev.CATALOGUE)


def golden_body(type_: str) -> bytes:
    return (FIXTURES / f"{type_.removeprefix('dev.vwm.')}.json").read_bytes()


def golden(type_: str) -> ev.VwmEvent:
    return codec.from_http({"Content-Type": "application/cloudevents+json"}, golden_body(type_))


def refused(headers: dict[str, str], body: bytes) -> ev.EventError:
    with pytest.raises(ev.EventError) as caught:
        codec.from_http(headers, body)
    return caught.value


@pytest.mark.parametrize("type_", TYPES)
def test_binary_mode_round_trips_with_extensions_as_headers(type_):
    event = golden(type_)
    headers, body = codec.to_binary(event)
    assert headers["content-type"] == "application/json"
    assert headers["ce-specversion"] == "1.0"
    assert (headers["ce-type"], headers["ce-id"], headers["ce-source"]) == (
        type_,
        event.id,
        event.source,
    )
    for name in ev.EXTENSIONS:
        value = getattr(event, name)
        assert headers.get(f"ce-{name}") == (None if value is None else str(value))
    assert json.loads(body) == event.data_json()
    assert codec.from_http(headers, body) == event


@pytest.mark.parametrize("type_", TYPES)
def test_structured_mode_round_trips_and_matches_the_golden_file(type_):
    event = golden(type_)
    headers, body = codec.to_structured(event)
    assert headers == {"content-type": "application/cloudevents+json"}
    assert json.loads(body) == json.loads(golden_body(type_))
    assert codec.from_http(headers, body) == event


def test_header_names_and_content_type_parameters_are_read_loosely():
    headers, body = codec.to_binary(golden("dev.vwm.job.output"))
    shouted = {name.upper(): value for name, value in headers.items()}
    shouted["CONTENT-TYPE"] = "application/json; charset=utf-8"
    assert codec.from_http(shouted, body) == golden("dev.vwm.job.output")
    structured = {"Content-Type": "application/cloudevents+json; charset=UTF-8"}
    assert codec.from_http(structured, golden_body("dev.vwm.tick")) == golden("dev.vwm.tick")


def test_binary_headers_on_a_structured_request_do_not_override_its_body():
    body = golden_body("dev.vwm.tick")
    headers = {"content-type": "application/cloudevents+json", "ce-type": "dev.vwm.job.failed"}
    assert codec.from_http(headers, body).type == "dev.vwm.tick"


def binary(type_: str) -> tuple[dict[str, str], bytes]:
    return codec.to_binary(golden(type_))


def structured_with(**changes) -> bytes:
    document = json.loads(golden_body("dev.vwm.job.started"))
    for name, value in changes.items():
        if value is None:
            document.pop(name, None)
        else:
            document[name] = value
    return json.dumps(document).encode()


STRUCTURED = {"content-type": "application/cloudevents+json"}


@pytest.mark.parametrize(
    ("make", "code", "status"),
    [
        # unknown type, either mode
        (lambda: (STRUCTURED, structured_with(type="dev.vwm.nope")), "unknown_event_type", 400),
        (
            lambda: ({**binary("dev.vwm.tick")[0], "ce-type": "com.example.x"}, b"{}"),
            "unknown_event_type",
            400,
        ),
        # payload of the wrong shape
        (lambda: (STRUCTURED, structured_with(data={"prompt": "p"})), "invalid_payload", 400),
        (
            lambda: (binary("dev.vwm.job.started")[0], b'{"prompt": "p", "cli": 3}'),
            "invalid_payload",
            400,
        ),
        # missing extensions
        (lambda: (STRUCTURED, structured_with(jobid=None)), "missing_extension", 400),
        (
            lambda: (
                {k: v for k, v in binary("dev.vwm.job.output")[0].items() if k != "ce-seq"},
                binary("dev.vwm.job.output")[1],
            ),
            "missing_extension",
            400,
        ),
        # spec versions
        (lambda: (STRUCTURED, structured_with(specversion="0.3")), "unsupported_specversion", 400),
        (
            lambda: (STRUCTURED, structured_with(specversion=["1.0"])),
            "unsupported_specversion",
            400,
        ),
        (lambda: (STRUCTURED, structured_with(specversion=None)), "unsupported_specversion", 400),
        (
            lambda: ({**binary("dev.vwm.tick")[0], "ce-specversion": "0.3"}, b"{}"),
            "unsupported_specversion",
            400,
        ),
        # non-JSON data
        (lambda: (binary("dev.vwm.tick")[0], b"not json"), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b""), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b'["a list"]'), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b'{"schedule": NaN}'), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b'{"a": 1, "a": 2}'), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b'{"s": "\xff"}'), "invalid_data", 400),
        (lambda: (binary("dev.vwm.tick")[0], b"[" * 10_000), "invalid_data", 400),
        (lambda: (STRUCTURED, b"not json"), "invalid_data", 400),
        (lambda: (STRUCTURED, b""), "invalid_data", 400),
        (lambda: (STRUCTURED, structured_with(data=None)), "invalid_data", 400),
        (lambda: (STRUCTURED, structured_with(data="text")), "invalid_data", 400),
        # wrong content types
        (
            lambda: ({**binary("dev.vwm.tick")[0], "content-type": "text/plain"}, b"{}"),
            "unsupported_content_type",
            415,
        ),
        (
            lambda: (
                {k: v for k, v in binary("dev.vwm.tick")[0].items() if k != "content-type"},
                b"{}",
            ),
            "unsupported_content_type",
            415,
        ),
        (
            lambda: ({"content-type": "application/json"}, golden_body("dev.vwm.tick")),
            "not_a_cloudevent",
            400,
        ),
        (lambda: ({}, golden_body("dev.vwm.tick")), "not_a_cloudevent", 400),
        (
            lambda: ({"content-type": "application/cloudevents-batch+json"}, b"[]"),
            "unsupported_content_type",
            415,
        ),
        (
            lambda: (STRUCTURED, structured_with(datacontenttype="application/xml")),
            "unsupported_content_type",
            415,
        ),
        # core attributes
        (lambda: (STRUCTURED, structured_with(id=None)), "missing_attribute", 400),
        (lambda: (STRUCTURED, structured_with(source="")), "missing_attribute", 400),
        (
            lambda: (
                {k: v for k, v in binary("dev.vwm.tick")[0].items() if k != "ce-source"},
                b"{}",
            ),
            "missing_attribute",
            400,
        ),
        (lambda: (STRUCTURED, structured_with(time="noon")), "invalid_attribute", 400),
        (lambda: (STRUCTURED, b" " * (codec.MAX_EVENT_BYTES + 1)), "event_too_large", 413),
    ],
)
def test_malformed_requests_are_refused_with_a_stable_code(make, code, status):
    headers, body = make()
    error = refused(headers, body)
    assert (error.code, error.status, error.retryable) == (code, status, False)
    assert error.message


def test_no_mangled_request_gets_past_the_codec_as_anything_but_an_event_error():
    """Byte-level damage to valid requests of every type: each answer is an event or a 4xx."""
    rng = random.Random(7)
    for type_ in TYPES:
        for make in (codec.to_binary, codec.to_structured):
            headers, body = make(golden(type_))
            for _ in range(40):
                damaged = bytearray(body)
                for _ in range(rng.randint(1, 4)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
                try:
                    codec.from_http(headers, bytes(damaged))
                except ev.EventError as error:
                    assert 400 <= error.status < 500


def test_from_cloudevent_refuses_what_is_not_an_sdk_event():
    with pytest.raises(TypeError):
        codec.from_cloudevent({"type": "dev.vwm.tick"})


# -- what a functions-framework CloudEvent target receives ---------------------------------------

_TARGET = """
from eventing import codec
from eventing.events import EventError

received = []
refusals = []


async def events(cloud_event):
    try:
        received.append(codec.from_cloudevent(cloud_event))
    except EventError as error:
        refusals.append(error.code)
"""


@pytest.fixture
def events_target(tmp_path):
    from functions_framework.aio import create_asgi_app

    source = tmp_path / "vwm_codec_probe_target.py"
    source.write_text(_TARGET)
    app = create_asgi_app(target="events", source=str(source), signature_type="cloudevent")
    module = sys.modules["vwm_codec_probe_target"]
    yield app, module
    sys.modules.pop("vwm_codec_probe_target", None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("type_", TYPES)
async def test_functions_framework_reads_what_the_codec_writes(events_target, type_):
    app, module = events_target
    event = golden(type_)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://events") as client:
        for encode in (codec.to_binary, codec.to_structured):
            headers, body = encode(event)
            response = await client.post("/", headers=headers, content=body)
            assert response.status_code == 200, response.text
    assert module.received == [event, event]
    assert module.refusals == []


async def test_functions_framework_leniency_is_caught_by_the_codec(events_target):
    """functions-framework hands a non-JSON binary body on as a string; the codec refuses it."""
    app, module = events_target
    headers, _ = codec.to_binary(golden("dev.vwm.tick"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://events") as client:
        response = await client.post("/", headers=headers, content=b"not json")
    assert response.status_code == 200
    assert module.received == []
    assert module.refusals == ["invalid_data"]


# -- the SDK stays inside the codec --------------------------------------------------------------


def test_a_cloudevents_import_outside_the_codec_breaks_the_contract(tmp_path):
    for package in ("harness", "functions", "eventing"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("clis", "__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    lint_imports = Path(sys.executable).parent / "lint-imports"

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(lint_imports), "--no-cache"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )

    assert lint().returncode == 0
    (tmp_path / "eventing" / "sneaky.py").write_text("from cloudevents.http import CloudEvent\n")
    result = lint()
    assert result.returncode != 0
    assert "eventing.sneaky -> cloudevents" in result.stdout
