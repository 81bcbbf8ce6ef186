"""Schemathesis against the real ``astrowatch api`` process, beside the real daemon with data
(two users whose results wait in the inbox), with a token configured and all its checks on.

Every operation ``/openapi.json`` lists is tested (routes added later join by themselves);
``GET /api/events`` has its own test (endless: a 200 is checked on its status and headers and
closed unread).  ``DELETE /api/users/{user}`` runs on generated users only (the fixture users'
names are refused to it), so only throwaway data is erased.  Positive cases on the read routes and
on ``POST /api/astro-image/{user}`` are pointed at the fixture users and jobs half the time, so the
data's answers (200, 202, 304, 409, 429) are checked too, not only 404s.

``make test`` runs a few examples per operation (about a minute); ``make test-long`` many more.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
import requests
from api_support import TOKEN, ApiProcess, wait_state
from harness import DaemonProcess, drop_theme, write_config

from astrowatch.storage.layout import MAX_NAME_BYTES

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    find_spec("schemathesis") is None or find_spec("fastapi") is None or find_spec("uvicorn") is None,
    reason="schemathesis (the dev extra) or the 'api' extra is not installed")]

EVENTS = "/api/events"

if find_spec("schemathesis") is not None:
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        ignored_auth,
        negative_data_rejection,
        positive_data_acceptance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
        unsupported_method,
    )

    CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance, negative_data_rejection, positive_data_acceptance, ignored_auth,
              unsupported_method]
    schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=EVENTS)
    events = schemathesis.pytest.from_fixture("api_schema").include(path=EVENTS)
else:  # collected as skipped
    schema = None

USERS = ("gaby", "lina")
# answers to well-formed requests whose content the server checks beyond the schema (a chart
# parsed as a chart, a photo decoded as a photo): 422 is their documented refusal
SEMANTIC = {("PUT", "/api/users/{user}/theme"), ("POST", "/api/users/{user}/photos")}


class Bearer(requests.auth.AuthBase):
    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {TOKEN}"
        return r


@pytest.fixture(autouse=True)
def _node_id(request):
    """Schemathesis 4's lazy schemas rename the test through ``node._nodeid``, which pytest 9's
    ``Function`` no longer has: give it one (the same id)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    config = write_config(root, astro={"backend": "fake"}, api={"max_pending_per_user": 2})
    daemon = DaemonProcess(config).start()
    api = ApiProcess(config)
    try:
        api.start()
        jobs = []
        for user in USERS:
            drop_theme(root / "data", user)
            jobs.append(wait_state(api, f"/api/astro-image/{user}", {"inbox"}, timeout=60)["job_id"])
        yield {"api": api, "jobs": jobs}
    finally:
        api.close()
        daemon.close()


@pytest.fixture(scope="module")
def api_schema(site):
    loaded = schemathesis.openapi.from_url(site["api"].base + "/openapi.json")
    # a body over 64 KB is refused before it is read (413, documented on every route): a refusal too
    rejection = loaded.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return loaded


def _on_fixture_data(case: Any, site: dict[str, Any]) -> None:
    """Positive cases of the read routes and of a generation: a fixture user or job half the time."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if case.method != "GET" and (case.method, case.path) != ("POST", "/api/astro-image/{user}"):
        return
    params = case.path_parameters or {}
    if "user" in params and ord(params["user"][0]) % 2 == 0:
        params["user"] = USERS[ord(params["user"][0]) % 4 // 2]
    if "job_id" in params and int(params["job_id"][0], 16) % 2 == 0:
        params["job_id"] = site["jobs"][int(params["job_id"][1], 16) % 2]


def _auth(case: Any) -> Bearer | None:
    """The real token in place of the generated one; none where the case left the header out on
    purpose (a negative case: it must get 401)."""
    return Bearer() if "Authorization" in (case.headers or {}) else None


def _valid_parameters(case: Any) -> bool:
    """Whether the parameters match their declared schemas.  Schemathesis 4.32 also replays values
    it saw in earlier requests and responses (the same string on every operation) as "positive"
    path and query parameters without checking them against the schema; those are not positive."""
    for param in case.operation.iter_parameters():
        where = {"path": case.path_parameters, "query": case.query, "header": case.headers}.get(param.location.value)
        value = (where or {}).get(param.name)
        if param.location.value == "path" and isinstance(value, str):
            value = unquote(value)
        schema = param.definition.get("schema")
        if isinstance(value, str) and schema and not jsonschema.Draft202012Validator(schema).is_valid(value):
            return False
        # the one rule JSON Schema cannot say (its maxLength counts characters): at most 200 bytes
        # of UTF-8, stated in the parameter's description
        if isinstance(value, str) and param.name == "user" and len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            return False
    return True


def _checks(case: Any) -> dict[str, Any]:
    positive = case.meta is not None and case.meta.generation.mode.is_positive and _valid_parameters(case)
    return {"checks": CHECKS, "excluded_checks": [] if positive else [positive_data_acceptance]}


def _run(case: Any, site: dict[str, Any]) -> None:
    if case.method == "DELETE" and (case.path_parameters or {}).get("user") in USERS:
        return  # erasing is tried on generated users only: the fixture users' data stays
    _on_fixture_data(case, site)
    checks = _checks(case)
    positive = not checks["excluded_checks"]
    if (case.method, case.path) in SEMANTIC:
        checks["excluded_checks"] = [positive_data_acceptance]
    response = case.call_and_validate(auth=_auth(case), timeout=60, **checks)
    if positive and (case.method, case.path) in SEMANTIC:
        assert response.status_code < 300 or response.status_code in (401, 404, 409, 422, 429), \
            (response.status_code, response.text[:300])


if schema is not None:
    @schema.parametrize()
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def test_the_api_keeps_its_openapi_promises(case, site) -> None:
        _run(case, site)

    @pytest.mark.long
    @schema.parametrize()
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    def test_the_api_keeps_its_openapi_promises_long(case, site) -> None:
        _run(case, site)


if schema is not None:
    @events.parametrize()
    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def test_the_event_stream_keeps_its_openapi_promises(case, site) -> None:
        """``GET /api/events`` never ends: a 200 is checked on its status and headers, then closed
        (its body, the endless stream, is never read); an error is read and checked in full."""
        with requests.request(**case.as_transport_kwargs(), auth=_auth(case), stream=True, timeout=10) as response:
            if response.status_code == 200:
                response._content = b""  # the stream so far: nothing read, nothing waited for
            else:
                _ = response.content  # the JSON error, read in full
        case.validate_response(response, transport_kwargs={"auth": _auth(case)}, **_checks(case))
