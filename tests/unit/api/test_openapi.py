"""The OpenAPI document says what the server does: the user-name pattern is check_user_name, the
redo parameters are review/params.py's table, every route's errors are ErrorOut, 405 names every
method of the path."""

from __future__ import annotations

import re
from importlib.util import find_spec

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astrowatch.core.errors import UnsafePathError
from astrowatch.storage.layout import MAX_NAME_BYTES, check_user_name, user_name_pattern

pytestmark = pytest.mark.skipif(find_spec("fastapi") is None, reason="the 'api' extra is not installed")


def _accepted(name: str) -> bool:
    try:
        check_user_name(name)
        return True
    except UnsafePathError:
        return False


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=12), st.from_regex(user_name_pattern(), fullmatch=True),
                 st.sampled_from(["_review", ".x", "..", " a", "a ", "a\n", "a/b", "\u200b", "gaby", "é"])))
def test_the_user_name_pattern_is_check_user_name(name: str) -> None:
    if len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES:
        assert bool(re.search(user_name_pattern(), name)) == _accepted(name), ascii(name)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from astrowatch.api.app import create_app
    from astrowatch.core.config import Config

    return create_app(Config(data_dir=tmp_path_factory.mktemp("data")), "t" * 20)


def test_every_error_is_documented_as_error_out(app) -> None:
    schema = app.openapi()
    assert "HTTPValidationError" not in str(schema) and schema["components"]["securitySchemes"]["bearer"]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorOut"), (method, path, status)
            if path.startswith("/api/"):
                assert {"401", "413", "503"} <= set(op["responses"]) and op["security"] == [{"bearer": []}]


def test_the_redo_params_are_the_bounds_table(app) -> None:
    from astrowatch.review.params import EDITABLE

    body = app.openapi()["paths"]["/api/jobs/{job_id}/redo"]["post"]["requestBody"]["content"]["application/json"]
    params = body["schema"]["anyOf"][0]["properties"]["params"]
    assert set(params["properties"]) == set(EDITABLE) and params["additionalProperties"] is False
    assert params["properties"]["steps"] == {"type": "integer", "minimum": 1, "maximum": 150}


def test_405_names_every_method_of_the_path(app) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(app)
    assert client.put("/api/astro-image/gaby").headers["allow"] == "GET, HEAD, POST"
    assert client.post("/healthz").headers["allow"] == "GET, HEAD"
