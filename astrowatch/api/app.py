"""The FastAPI application: routes, the token check, body limits and JSON errors.

Every error is ``{"error": "...", "hint": "..."}``.  The logic lives in :mod:`.service`; this
module maps it onto HTTP.  Imported only by ``astrowatch api`` (FastAPI is the ``api`` extra).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Annotated, Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from astrowatch.api.auth import bearer, token_matches
from astrowatch.api.events import event_routes
from astrowatch.api.metrics import LedgerCollector, render
from astrowatch.api.openapi import (
    BEARER,
    COMMON,
    MAX_BODY,
    PUBLIC,
    ErrorOut,
    JobId,
    UserName,
    UserQuery,
    errors,
    exactly,
    redo_params_schema,
)
from astrowatch.api.service import ApiError, Service
from astrowatch.api.uploads import STREAMED, upload_routes
from astrowatch.core.config import Config
from astrowatch.core.errors import AstrowatchError
from astrowatch.core.jobs import ASTRO_BACKENDS, ENHANCE_BACKENDS, PENDING, BackendName, Decision, JobKind
from astrowatch.review.params import SEED_MAX, enabled_backends, params_schema
from astrowatch.storage import paging

log = structlog.get_logger("astrowatch.api")
QUIET_PATHS = frozenset({"/healthz", "/metrics"})
GENERATION_BACKENDS = tuple(b for b in ASTRO_BACKENDS if b != BackendName.AUTO)
REDO_BACKENDS = {JobKind.ASTRO: GENERATION_BACKENDS,
                 JobKind.ENHANCE: tuple(b for b in ENHANCE_BACKENDS if b != BackendName.AUTO)}
HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})
RETRY_AFTER_BUSY = "30"  # seconds: a user's pending generations take about that long each on a GPU


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationBody(Strict):
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="fixed seed (default: derived from the chart)")
    style: str | None = Field(None, max_length=100, description="style preset (default: astro.style)")
    variants: int | None = Field(None, ge=1, le=8, description="images to choose from (default: astro.variants)")


class DecisionBody(Strict):
    caption: str | None = Field(None, max_length=20_000, description="replaces the description (.txt) first")


class RedoBody(DecisionBody):
    params: dict[str, Any] = Field(default_factory=dict, description="parameter overrides, e.g. {\"steps\": 40}")


class CaptionBody(Strict):
    caption: str | None = Field(None, max_length=1000, description="the sentence after the trigger word (one line)")
    tags: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None, max_length=200, description="the tags of line 1, in order (no commas inside a tag)")


class ProposedTag(BaseModel):
    tag: str | None
    score: float | None
    category: str | None


class Proposed(BaseModel):
    line: str | None
    caption: str | None
    tags: list[ProposedTag]


class CaptionOut(BaseModel):
    job_id: str
    line: str = Field(description="line 1 of the result's .txt: what approval files")
    trigger: str
    caption: str
    tags: list[str]
    proposed: Proposed = Field(description="what the captioner and the tagger proposed (tags with their scores)")


class AstroImage(BaseModel):
    user: str
    state: str = Field(description="none, or the latest astro job's state: queued, running, waiting, inbox, ...")
    image: str | None = Field(description="URL of the delivered picture, once one was approved")
    pending: str | None = Field(description="URL of the result awaiting review")
    job_id: str | None
    prompt: str | None
    backend: str | None
    error: str | None
    updated_at: str | None


class HealthOut(BaseModel):
    status: str = Field(description="ok or unhealthy")
    ledger: bool
    daemon_up: bool
    heartbeat_age_s: float | None
    reasons: list[str]


class Accepted(BaseModel):
    job_id: str
    state: str
    status_url: str
    created: bool | None = None
    decision: str | None = None


class JobOut(BaseModel):
    job_id: str
    kind: str
    user: str
    state: str
    attempts: int
    backend: str | None
    params: dict[str, Any]
    prompt: str | None
    error: str | None
    image: str | None
    decision: str | None
    parent_id: str | None
    redo_job_id: str | None
    created_at: str | None
    updated_at: str | None
    status_url: str


class VariantOut(BaseModel):
    variant: int = Field(description="its number: POST /api/jobs/{id}/pick with {\"variant\": k} delivers it")
    seed: int | None
    image: str = Field(description="URL of this variant's image")


class InboxOut(BaseModel):
    job_id: str
    user: str
    kind: str
    backend: str | None
    image: str
    waiting_s: int
    status_url: str
    variants: list[VariantOut] | None = Field(None, description="astro.variants > 1: pick one; image is the contact sheet")


class PickBody(DecisionBody):
    variant: int = Field(ge=1, le=8, description="the variant to deliver (its siblings are retired)")


def error_response(status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "hint": hint}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware: refuse bodies over :data:`MAX_BODY` (413) and log one line per request
    (method, path, status, milliseconds; never headers, so never the token)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [0]

        async def send_logged(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            # uploads read their own body, with their own limits, as it arrives
            replay = receive if STREAMED.match(scope["path"]) else await self._read_body(scope, receive)
            if replay is None:
                await error_response(413, f"request body over {MAX_BODY // 1024} KB",
                                     "send a smaller JSON body")(scope, receive, send_logged)
            else:
                await self.app(scope, replay, send_logged)
        finally:
            emit = log.debug if scope["path"] in QUIET_PATHS else log.info  # scrapes and probes: debug
            emit("request", method=scope["method"], path=scope["path"], status=status[0],
                 ms=round((time.perf_counter() - t0) * 1000, 2))

    @staticmethod
    async def _read_body(scope: dict[str, Any], receive: Any) -> Any:
        """A ``receive`` replaying the whole body, or ``None`` when it is too large."""
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # disconnected: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                return None
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict[str, Any]:
            return pending.pop() if pending else await receive()

        return replay


PNG: dict[str, Any] = {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
       "headers": {"ETag": {"description": "send it back in If-None-Match", "schema": {"type": "string"}},
                   "Cache-Control": {"schema": {"type": "string"}}}}
NOT_MODIFIED: dict[str, Any] = {"description": "the picture of the If-None-Match ETag, unchanged (no body)",
                "headers": PNG["headers"], "content": {}}
bearer_scheme = HTTPBearer(auto_error=False, scheme_name=BEARER,
                           description="the API token (ASTROWATCH_API_TOKEN, the systemd credential api_token or "
                                       "api.token_file); every /api route needs it when one is configured")


def create_app(config: Config, token: str | None) -> FastAPI:
    service = Service(config)

    def authorized(request: Request, _declared: Annotated[Any, Depends(bearer_scheme)]) -> None:
        if token is not None and not token_matches(bearer(request.headers.get("authorization")), token):
            raise ApiError(401, "missing or wrong API token", "send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})

    app = Api(title="astrowatch", version="1", docs_url="/docs", redoc_url=None,
                  description="Where a user's astro picture stands, new generations, review, health and metrics. "
                  "Every error is JSON {\"error\", \"hint\"}; a method a path does not take is 405 with the "
                  "path's methods in Allow; a path no route has is 404.")
    app.add_middleware(Guard)
    _errors(app)
    protected: dict[str, Any] = {"dependencies": [Depends(authorized)], "responses": COMMON}
    app.include_router(_reads(service), **protected)
    app.include_router(_writes(service, config), **protected)
    app.include_router(_personal_data(service), **protected)
    app.include_router(upload_routes(service, config), **protected)
    app.include_router(event_routes(service, config), **protected)
    # no token needed: load balancers and Prometheus; user names in /metrics only where configured, with the token
    app.include_router(_operations(service, token if config.api.metrics_per_user else None), responses=PUBLIC)
    return app


class Api(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """FastAPI's document, where its ``422`` of its own shape (``HTTPValidationError``, on every
        route with parameters) is ours, :class:`ErrorOut` (see :func:`_errors`), routes added later
        included."""
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()
        for ops in schema.get("paths", {}).values():
            for op in ops.values():
                unprocessable = op.get("responses", {}).get("422")
                if unprocessable and "HTTPValidationError" in str(unprocessable):
                    op["responses"]["422"] = {"description": "a parameter or body the server refuses; the hint "
                                              "lists the valid ones",
                                              "content": {"application/json": {"schema": {
                                                  "$ref": "#/components/schemas/ErrorOut"}}}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorOut", ErrorOut.model_json_schema())
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused not in str(schema.get("paths")):
                components.pop(unused, None)
        self.openapi_schema = schema
        return schema


def _personal_data(service: Service) -> APIRouter:
    """GDPR requests of the upstream app: a person's data exported, or erased."""
    router = APIRouter(prefix="/api")

    @router.delete("/users/{user}", response_model=dict[str, Any],
                   responses=errors(400, 409, s409="a job of theirs is still running; try again"))
    def forget_user(user: UserName) -> dict[str, Any]:
        """Erase everything stored about `user` (like `astrowatch forget --yes`); the report names them
        only by a salted hash."""
        return service.forget_user(user)

    @router.get("/users/{user}/export", response_class=Response,
                responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                                 "description": "a zip of their files, ledger rows and log lines, with index.json",
                                 "headers": {"Content-Disposition": {"schema": {"type": "string"}}}},
                           **errors(400)})
    def export_user(user: UserName) -> Response:
        data = service.export_user(user)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": attachment(f"{service.user(user)}.zip"),
                                 "Cache-Control": "no-store"})

    return router


def _reads(service: Service) -> APIRouter:
    router = APIRouter(prefix="/api")

    png: dict[int | str, dict[str, Any]] = {200: {**PNG, "description": "the PNG"}, 304: NOT_MODIFIED}

    @router.get("/astro-image/{user}", response_model=AstroImage, responses=errors(400))
    def astro_image(user: UserName) -> dict[str, Any]:
        return service.astro_image(user)

    @router.get("/astro-image/{user}/image.png", response_class=Response,
                responses={**png, **errors(400, 404, s404="no delivered picture (yet)")})
    def delivered(user: UserName, request: Request) -> Response:
        return _png(service.delivered_image(user), request)

    @router.get("/jobs/{job_id}", response_model=JobOut, responses=errors(400, 404))
    def job(job_id: JobId) -> dict[str, Any]:
        return service.job_view(job_id)

    @router.get("/jobs/{job_id}/image.png", response_class=Response,
                responses={**png, **errors(400, 404, s404="no such job, or no result of it awaiting review")})
    def pending(job_id: JobId, request: Request,
                variant: int | None = Query(None, ge=1, le=8, description="one of several variants")) -> Response:
        return _png(service.pending_image(job_id, variant=variant), request)

    @router.get("/jobs/{job_id}/caption", response_model=CaptionOut, responses=errors(400, 404, 409))
    def caption(job_id: JobId) -> dict[str, Any]:
        return service.caption(job_id)

    @router.get("/inbox", response_model=list[InboxOut], responses={**errors(400), 200: {"headers": {"Link": {
        "description": 'the next page: `<...&cursor=...>; rel="next"` (absent on the last page)',
        "schema": {"type": "string"}}}}})
    def inbox(request: Request, response: Response, user: UserQuery = None, kind: JobKind | None = None,
              limit: int = Query(paging.DEFAULT_LIMIT, ge=1, le=paging.MAX_LIMIT,
                                 description="items per page (oldest first)"),
              cursor: str | None = Query(None, max_length=paging.MAX_LENGTH, pattern=paging.PATTERN,
                                         description="from the previous page's Link header"),
              ) -> list[dict[str, Any]]:
        """Results waiting for review, one page at a time (a JSON array); the next page's URL is in
        the `Link: <...>; rel="next"` header."""
        items, after = service.inbox(user, kind=kind, limit=limit, cursor=cursor)
        if after is not None:
            response.headers["Link"] = f'<{request.url.include_query_params(cursor=after)}>; rel="next"'
        return items

    return router


def _writes(service: Service, config: Config) -> APIRouter:
    router = APIRouter(prefix="/api", responses=errors(400, 404, 409, 422))
    accepted: dict[str, Any] = {"status_code": 202, "response_model": Accepted, "response_model_exclude_none": True}
    admit = threading.Lock()  # the pending count and the new row, one request at a time per process
    backends = enabled_backends(config, JobKind.ASTRO)
    # the bodies as this configuration takes them: its styles, its backends (the models check the
    # shape; the styles and parameters are checked by review.params, which these schemas come from)
    generation_body = _body_schema(GenerationBody, style={"anyOf": [params_schema(config, JobKind.ASTRO)["style"],
                                                                     {"type": "null"}]})
    redo_body = _body_schema(RedoBody, params={**redo_params_schema(config), "description": (
        "parameter overrides, e.g. {\"steps\": 40}; a backend must be one of the job's kind (astro or enhance)")})

    @router.post("/astro-image/{user}", **accepted, responses=errors(
        404, 409, 429, s404="the user has no theme", s409="the daemon has not taken the user's current theme yet",
        s429="api.max_pending_per_user generations of this user are pending already"))
    def generate(user: UserName, request: Request,
                 backend: str | None = Query(None, description="for this job only: " + ", ".join(backends),
                                             json_schema_extra=exactly({"type": "string", "enum": backends})),
                 body: GenerationBody | None = Body(None, json_schema_extra=generation_body)) -> dict[str, Any]:
        overrides = _overrides(config, request, backend, body)
        with admit:
            check_pending(service, service.user(user), overrides, config.api.max_pending_per_user)
            return service.request_generation(user, overrides)[0]

    def decision(name: Decision) -> Any:
        def decide(job_id: JobId, body: DecisionBody | None = Body(None)) -> dict[str, Any]:
            return service.decide(job_id, name, caption=body.caption if body else None)
        return decide

    not_awaiting = {"s409": "the job is not awaiting review, or its result was moved meanwhile"}
    for name in (Decision.APPROVE, Decision.REJECT):
        router.post(f"/jobs/{{job_id}}/{name}", name=name, **accepted,
                    responses=errors(409, **not_awaiting))(decision(name))

    @router.patch("/jobs/{job_id}/caption", response_model=CaptionOut, responses=errors(400, 404, 409, 422))
    def edit_caption(job_id: JobId, body: CaptionBody) -> dict[str, Any]:
        return service.edit_caption(job_id, body.caption, body.tags)

    @router.post("/jobs/{job_id}/pick", **accepted, responses=errors(409, **not_awaiting))
    def pick(job_id: JobId, body: PickBody) -> dict[str, Any]:
        return service.decide(job_id, Decision.APPROVE, caption=body.caption, variant=body.variant)

    @router.post("/jobs/{job_id}/redo", **accepted, responses=errors(409, **not_awaiting))
    def redo(job_id: JobId, body: RedoBody | None = Body(None, json_schema_extra=redo_body)) -> dict[str, Any]:
        body = body or RedoBody()
        _check_redo_params(service, job_id, body.params)
        return service.decide(job_id, Decision.REDO, caption=body.caption, params=body.params)

    return router


def _operations(service: Service, users_token: str | None) -> APIRouter:
    """``/healthz`` and ``/metrics``; ``users_token``: the API token where ``api.metrics_per_user``
    is set (a scrape that presents it gets the per-user series), else None."""
    router = APIRouter()
    collector = LedgerCollector(service)

    @router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut,
                                                                      "description": "unhealthy, with the reasons"}})
    def healthz() -> JSONResponse:
        ok, info = service.health()
        return JSONResponse(info, status_code=200 if ok else 503)

    @router.get("/metrics", response_class=Response, openapi_extra={"security": [{}, {BEARER: []}]},
                responses={200: {"description": "Prometheus text exposition (per-user series only where "
                                                "api.metrics_per_user is set, and with the token)",
                                 "content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics(request: Request) -> Response:
        with_users = users_token is not None and token_matches(bearer(request.headers.get("authorization")),
                                                                users_token)
        body, content_type = render(collector, per_user=with_users)
        return Response(body, media_type=content_type)

    return router


def _body_schema(model: type[BaseModel], **fields: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The ``json_schema_extra`` of an optional JSON body: ``model``'s schema with ``fields`` replaced."""
    schema = model.model_json_schema()
    for name, field in fields.items():
        schema["properties"][name] = {"title": schema["properties"][name].get("title", name), **field}
    return exactly({"anyOf": [schema, {"type": "null"}]})


def attachment(name: str) -> str:
    """``Content-Disposition`` for ``name``: an ASCII fallback and the UTF-8 name (RFC 6266), since
    a header is Latin-1 and a user name any Unicode (it crashed the export of such a user)."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _overrides(config: Config, request: Request, backend: str | None, body: GenerationBody | None) -> dict[str, Any]:
    from astrowatch.fusion.data import merged_raw_styles

    unknown = sorted(set(request.query_params) - {"backend"})
    if unknown:
        raise ApiError(422, f"unknown query parameter {unknown[0]!r}",
                       "valid: backend (query); seed, style, variants (JSON body)")
    overrides: dict[str, Any] = {}
    if backend is not None:
        if backend not in GENERATION_BACKENDS:
            raise ApiError(422, f"unknown backend {backend!r}", "valid backends: " + ", ".join(GENERATION_BACKENDS))
        overrides["backend"] = backend
    if body is not None and body.seed is not None:
        overrides["seed"] = body.seed
    if body is not None and body.variants is not None:
        overrides["variants"] = body.variants
    if body is not None and body.style is not None:
        styles = sorted(merged_raw_styles(config.astro.styles_file))
        if body.style not in styles:
            raise ApiError(422, f"unknown style {body.style!r}", "valid styles: " + ", ".join(styles))
        overrides["style"] = body.style
    return overrides


def check_pending(service: Service, user: str, overrides: dict[str, Any], limit: int) -> None:
    """``429`` with ``Retry-After`` when ``user`` already has ``limit`` astro jobs not produced yet
    (queued, running or waiting: whoever asked for them, the daemon's own theme job included).
    The same request as a pending one is let through: the ledger answers it with that job."""
    pending = [j for j in service.reader().by_state(*PENDING, kind=JobKind.ASTRO) if j.user == user]
    if len(pending) < limit:
        return
    if any({k: v for k, v in j.params.items() if not k.startswith("_")} == overrides for j in pending):
        return
    raise ApiError(429, f"{user} already has {len(pending)} generations pending (api.max_pending_per_user: "
                   f"{limit})", "retry when one has finished: GET /api/astro-image/{user} shows the latest",
                   {"Retry-After": RETRY_AFTER_BUSY})


def _check_redo_params(service: Service, job_id: str, params: dict[str, Any]) -> None:
    for key in params:
        if not key or key.startswith("_") or len(key) > 100:
            raise ApiError(422, f"parameter name {key[:100]!r} is not allowed",
                           "names like steps, cfg_scale, seed, backend")
    if "backend" in params:
        kind = service.job(job_id).kind
        if params["backend"] not in REDO_BACKENDS[kind]:
            raise ApiError(422, f"unknown backend {params['backend']!r} for a {kind} job",
                           "valid backends: " + ", ".join(REDO_BACKENDS[kind]))


def _png(data: bytes, request: Request) -> Response:
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="image/png", headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.hint, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        hints = {404: "see /docs or /openapi.json for the routes", 405: "see /docs for the methods of each route"}
        error = f"no route {request.method} {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names the methods of the first route of that path only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))} \
                if allowed_methods(request) else headers
        return error_response(exc.status_code, error, hints.get(exc.status_code, "see /docs"), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:] if p != "body") or str(first["loc"][0])
        if first["type"] == "extra_forbidden":
            return error_response(422, f"unknown key {where!r}", "valid keys: " + _valid_keys(request.url.path))
        if first["type"] in ("json_invalid", "model_attributes_type", "dict_type"):
            return error_response(422, "the body is not a JSON object", "send a JSON object, or no body")
        return error_response(422, f"{where}: {first['msg']}", "valid keys: " + _valid_keys(request.url.path))

    @app.exception_handler(AstrowatchError)
    async def unavailable(_request: Request, exc: AstrowatchError) -> JSONResponse:
        return error_response(503, exc.message, exc.hint or "run 'astrowatch doctor'", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in a request")
        return error_response(500, "internal error", "see the astrowatch-api log (journalctl -u astrowatch-api)")


def allowed_methods(request: Request) -> list[str]:
    """The methods of every operation of the request's path in the OpenAPI document (GET brings
    HEAD, as Starlette serves it); ``[]`` for a path it does not list (``/docs``)."""
    methods: set[str] = set()
    for template, ops in request.app.openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^}]+\})", template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in ops if m.upper() in HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _valid_keys(path: str) -> str:
    if path.endswith("/redo"):
        return "params (an object of parameter overrides), caption"
    if path.endswith("/caption"):
        return "caption (the sentence), tags (a list, in order)"
    if path.endswith(("/approve", "/reject")):
        return "caption"
    return "seed, style (JSON body); backend (query)"
