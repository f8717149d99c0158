"""Fuzzing every HTTP route against the running app, with small fixed budgets.

schemathesis generates requests from the app's own OpenAPI document (valid and invalid parameters);
hypothesis adds JSON bodies for the ASAPP control routes, whose bodies the document does not
describe. Every answer must be a non-500, and every error must be in its surface's error shape.
"""

from __future__ import annotations

import json
import tempfile

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.errors import Unsatisfiable

from callscribe.app import create_app
from callscribe.config import load_settings

ACME = {"asapp-api-id": "ka", "asapp-api-secret": "sa"}
BUDGET = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))


def _asapp_shape(body: object) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and set(error) == {"requestId", "code", "message"} and all(
        isinstance(error[k], str) for k in error)


def _memories_shape(body: object) -> bool:
    return isinstance(body, dict) and set(body) == {"code", "message", "data"} and isinstance(body["code"], int) \
        and isinstance(body["message"], str) and body["data"] is None


# Each surface's error shape, by path prefix (longest first); callscribe's own (ASAPP's) otherwise.
ERROR_SHAPES: list[tuple[str, object]] = [("/serve/api/v2/audio-stream", _memories_shape), ("/", _asapp_shape)]


def check_answer(path: str, status: int, content_type: str, body: bytes) -> None:
    assert status != 500 and (status < 500 or status == 503), f"{path}: HTTP {status}: {body[:300]!r}"
    if status >= 400:
        assert content_type.startswith("application/json"), f"{path}: HTTP {status} as {content_type}"
        shape = next(check for prefix, check in ERROR_SHAPES if path.startswith(prefix))
        assert shape(json.loads(body)), f"{path}: HTTP {status} not in its surface's shape: {body[:300]!r}"


def _document() -> dict:
    app = create_app(load_settings(data_dir=tempfile.mkdtemp(prefix="callscribe-openapi-"), api_keys="ka:sa:acme"))
    return app.openapi()


SCHEMA = schemathesis.openapi.from_dict(_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


@pytest.fixture
def fuzz_app(start_app):
    # SQLite only for now: on PostgreSQL a guid with %00 reaches the database and answers 500 until
    # the validators and the columns agree (issue 10, item 5); add the PostgreSQL run then.
    # Limits high enough that the fuzzer's own volume is not what it meets.
    return start_app(rate_limit_per_minute=100000, auth_failures_per_minute=100000,
                     webhook_url="http://127.0.0.1:9/hook")


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                         ids=lambda m: m.value)
def test_every_documented_route(fuzz_app, operation, mode):
    with httpx.Client(base_url=fuzz_app.url) as client:

        @BUDGET
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            kwargs = case.as_transport_kwargs(base_url=fuzz_app.url, headers=ACME)
            r = client.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                               headers={k: str(v) for k, v in (kwargs.get("headers") or {}).items()},
                               content=_content(kwargs))
            check_answer(operation.path, r.status_code, r.headers.get("content-type", ""), r.content)

        try:
            run()
        except Unsatisfiable:
            if mode is schemathesis.GenerationMode.POSITIVE:
                raise
            pytest.skip("the document admits no invalid input for this route")


def _content(kwargs: dict) -> bytes | None:
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data") or kwargs.get("content")
    return data.encode() if isinstance(data, str) else data


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12),
                                                                                           inner, max_size=4),
                     max_leaves=12)
_FIELDS = ["namespace", "guid", "customerId", "agentId", "autotranscribeParams", "twilioParams", "language",
           "redactionOutput", "detailedToken", "audioRecordingAllowed", "externalId", "trackMap", "sender", "role"]
_BODIES = (st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=6).map(lambda d: json.dumps(d).encode())
           | _JSON.map(lambda v: json.dumps(v).encode())
           | st.binary(max_size=200))


@pytest.mark.parametrize("path", ["/mg-autotranscribe/v1/start-streaming", "/mg-autotranscribe/v1/stop-streaming",
                                  "/autotranscribe/v1/streaming-url"])
def test_asapp_control_bodies(fuzz_app, path):
    with httpx.Client(base_url=fuzz_app.url) as client:

        @BUDGET
        @given(body=_BODIES)
        def run(body):
            r = client.post(path, content=body, headers={**ACME, "content-type": "application/json"})
            check_answer(path, r.status_code, r.headers.get("content-type", ""), r.content)

        run()


def test_every_http_route_is_documented_or_probed(fuzz_app):
    """Routes outside the document are checked here, so no HTTP route escapes the fuzzing."""
    from fastapi.routing import APIRoute

    documented = {op.path for op in OPERATIONS}
    hidden = {r.path for r in fuzz_app.app.routes if isinstance(r, APIRoute) and r.path not in documented}
    assert hidden <= {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
    for path in ("/healthz", "/readyz", "/metrics", "/nope", "/v1/calls/%00"):
        r = httpx.get(fuzz_app.url + path, headers=ACME)
        check_answer(path, r.status_code, r.headers.get("content-type", ""), r.content)
