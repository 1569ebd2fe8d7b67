"""Hostile requests each get their error status, in OpenAI's shape, and the server keeps serving."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dsvl_tui.serve.app import create_app

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def request(content: Any = "hi") -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 3, "temperature": 0}


def with_images(*urls: str) -> dict[str, Any]:
    return request([{"type": "image_url", "image_url": {"url": url}} for url in urls] + [{"type": "text", "text": "?"}])


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(tiny_engine: Any) -> Any:
    with TestClient(create_app(tiny_engine, api_key=KEY, model_name="tiny")) as test_client:
        yield test_client


def hostile_cases() -> list[Any]:
    bomb = png((12_000, 12_000), mode="1")  # 144 megapixels in a few kB
    assert len(bomb) < 100_000
    buffer = io.BytesIO()
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).save(buffer, "PNG")
    noise = buffer.getvalue()
    return [
        pytest.param({"content": b"{not json"}, 400, "invalid_json", id="invalid-json"),
        pytest.param({"json": [1, 2]}, 400, "invalid_json", id="json-not-object"),
        pytest.param({"json": {**request(), "messages": "hi"}}, 400, "invalid_value", id="messages-wrong-type"),
        pytest.param({"json": {**request(), "max_tokens": "many"}}, 400, "invalid_value", id="max-tokens-wrong-type"),
        pytest.param({"json": {**request(), "temperature": -1}}, 400, "invalid_value", id="negative-temperature"),
        pytest.param({"json": {**request(), "messages": []}}, 400, "invalid_value", id="no-messages"),
        pytest.param({"json": {**request(), "messages": [{"role": "tool", "content": "x"}]}}, 400, "invalid_value",
                     id="unknown-role"),
        pytest.param({"content": b'{"model": "tiny", "pad": "' + b"x" * (50 * 1024 * 1024) + b'"}'}, 413,
                     "request_too_large", id="50MB-body"),
        pytest.param({"json": with_images("data:image/png;base64,@@not base64@@")}, 400, "invalid_image",
                     id="invalid-base64"),
        pytest.param({"json": with_images(data_url(b"plain text, not a picture"))}, 400, "invalid_image",
                     id="not-an-image"),
        pytest.param({"json": with_images(data_url(noise[:len(noise) // 2]))}, 400, "invalid_image",
                     id="truncated-image"),
        pytest.param({"json": with_images(data_url(bomb))}, 413, "image_too_large", id="decompression-bomb"),
        pytest.param({"json": with_images(*[data_url(png())] * 200)}, 413, "too_many_images", id="200-images"),
        pytest.param({"json": with_images("file:///etc/passwd")}, 400, "unsupported_image_url", id="file-url"),
        pytest.param({"json": with_images("http://169.254.169.254/latest/meta-data")}, 400, "unsupported_image_url",
                     id="http-url"),
        pytest.param({"json": with_images("/etc/passwd")}, 400, "unsupported_image_url", id="server-path"),
        pytest.param({"content": b'{"model": "tiny", "pad": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}, 400,
                     "invalid_json", id="json-nested-100000-deep"),
        pytest.param({"content": b'{"model": "tiny", "pad": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001}, 400,
                     "invalid_json", id="json-objects-nested-100000-deep"),
        pytest.param({"json": request(), "headers": {}}, 401, "missing_api_key", id="no-key"),
        pytest.param({"json": request(), "headers": {"Authorization": "Bearer wrong"}}, 401, "invalid_api_key",
                     id="wrong-key"),
    ]


@pytest.mark.parametrize(("kwargs", "status", "code"), hostile_cases())
def test_hostile_request_is_refused_and_the_server_keeps_serving(client: Any, kwargs: dict[str, Any], status: int,
                                                                 code: str) -> None:
    kwargs = {"headers": AUTH, **kwargs}
    response = client.post("/v1/chat/completions", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"] and error["type"]
    after = client.post("/v1/chat/completions", json=request(), headers=AUTH)
    assert after.status_code == 200 and after.json()["choices"][0]["message"]["content"]


def test_models_need_the_key_and_health_does_not(client: Any) -> None:
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert client.get("/health").status_code == 200
