"""What the OpenAPI document says about every route, declared next to the routes and built from the
same rules the server applies (so a generated client sends only what the server takes):

- :class:`ErrorOut` and :func:`errors`: the JSON error body of every status a route can send, with
  the headers that come with it (``WWW-Authenticate`` on 401, ``Retry-After`` on 409, 429, 503);
  :data:`COMMON` is what any ``/api`` route can answer (401 wrong token, 413 body over
  :data:`MAX_BODY`, 503 no ledger), added by ``include_router(..., responses=COMMON)``;
- :data:`UserName`, :data:`UserQuery`, :data:`JobId`: the path and query parameters with the
  pattern and length of :func:`astrowatch.storage.layout.check_user_name` and of a job id.  The
  server still checks them itself (400, naming the rule): the schema only describes that check;
- :func:`redo_params_schema`: the body of ``POST /api/jobs/{id}/redo``'s ``params`` from the bounds
  table of :mod:`astrowatch.review.params`, the one validation of parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from astrowatch.core.config import Config
from astrowatch.review.params import params_schema
from astrowatch.storage.layout import MAX_NAME_BYTES, user_name_pattern

MAX_BODY = 64 * 1024  # the JSON bodies (not the uploads, which have their own limits)
JOB_ID_PATTERN = "^[0-9a-f]{12}$"
BEARER = "bearer"  # the security scheme's name in components.securitySchemes


class ErrorOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="what went wrong")
    hint: str = Field(description="what to do about it")


_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    409: {"Retry-After": _RETRY_AFTER},
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}
WHY: dict[int, str] = {
    400: "a user name or job id the daemon refuses as a folder name (see the parameter's pattern)",
    401: "missing or wrong API token (send 'Authorization: Bearer <token>')",
    404: "no such user data, job or picture",
    409: "the resource is not in a state that allows this; retry or read its state",
    413: f"the request body is over {MAX_BODY // 1024} KB (JSON bodies)",
    415: "the body's media type is not the one this route takes",
    422: "a parameter or body the server refuses; the hint lists the valid ones",
    429: "too many requests pending for this user; retry after Retry-After seconds",
    503: "the ledger cannot be read yet (the daemon never ran on this data folder), or cannot be written",
}


def errors(*statuses: int, **why: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries: each status with :class:`ErrorOut` as its JSON body, its headers and
    a description (``why``, keyed ``s413=...``, replaces the default one)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorOut, "description": why.get(f"s{status}", WHY.get(status, "error"))}
        if status in HEADERS:
            entry["headers"] = HEADERS[status]
        out[status] = entry
    return out


COMMON = errors(401, 413, 503)
PUBLIC = errors(413, 503)  # /healthz, /metrics: no token needed

def exactly(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that makes the field's JSON Schema ``schema`` (keeping its title and
    description): pydantic's own would say ``anyOf: [string, null]`` for an optional query
    parameter, and nothing of the bounds the server checks itself."""
    def replace(generated: dict[str, Any]) -> None:
        kept: dict[str, Any] = {k: generated[k] for k in ("title", "description") if k in generated}
        generated.clear()
        generated.update({**kept, **schema})
    return replace


USER_NAME_SCHEMA: dict[str, Any] = {
    "type": "string", "pattern": user_name_pattern(), "minLength": 1, "maxLength": MAX_NAME_BYTES,
}
_USER_TEXT = (f"the user's folder name in Utilisateurs/: at most {MAX_NAME_BYTES} bytes of UTF-8 (as many ASCII "
              "characters, fewer beyond), no '/', '\\', control or format character, no leading dot or surrounding "
              "space, not '_review' (the pattern); 400 otherwise")
UserName = Annotated[str, Path(description=_USER_TEXT, json_schema_extra=exactly(USER_NAME_SCHEMA))]
UserQuery = Annotated[str | None, Query(description="only this user's. " + _USER_TEXT,
                                        json_schema_extra=exactly(USER_NAME_SCHEMA))]
JobId = Annotated[str, Path(description="12 hexadecimal characters, as the API returns them (404 for an id no job "
                                        "has, 400 for one the daemon refuses as a folder name)",
                            json_schema_extra=exactly({"type": "string", "pattern": JOB_ID_PATTERN}))]


def redo_params_schema(config: Config) -> dict[str, Any]:
    """The ``params`` object of a redo: each editable parameter with its bounds under ``config``
    (:mod:`astrowatch.review.params`'s table; ``backend``: those of either job kind, the job's own
    kind is checked against its job)."""
    return {"type": "object", "properties": params_schema(config), "additionalProperties": False}
