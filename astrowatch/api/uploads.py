"""Uploads over the API: a chart or photos land in ``Utilisateurs/<user>/`` as if dropped there.

The folder stays the one source of truth: nothing here makes a job.  A file is written under a
hidden temporary name in the user's folder (:class:`astrowatch.storage.safefs.Staged`: opened
without following links), checked, then published under its name with a rename; the watcher takes
it like any dropped file, so the pipeline, the ledger and review stay one.

- ``PUT /api/users/{user}/theme``: the JSON body (at most ``limits.max_json_bytes``, read as it
  arrives) is parsed as a chart first; a bad chart is ``422`` with the reason and writes nothing.
- ``POST /api/users/{user}/photos``: multipart, field ``file`` (several allowed), each streamed to
  its temporary file with ``limits.max_image_bytes`` applied as it arrives (``413``), then decoded
  in a sandboxed child exactly as the daemon will (:mod:`astrowatch.api.photocheck`); one that is
  not a usable image makes the whole request ``422`` and no file.  At most
  ``api.max_pending_uploads_per_user`` photos may wait in the folder; beyond, ``429`` with
  ``Retry-After``.
"""

from __future__ import annotations

import os
import re

from anyio import to_thread
from fastapi import APIRouter, Request
from pydantic import BaseModel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from astrowatch.api.openapi import UserName, errors
from astrowatch.api.service import ApiError, Service
from astrowatch.core.config import Config
from astrowatch.core.errors import AstrowatchError, InputError, UnsafePathError
from astrowatch.core.formats import IMAGE_EXTENSIONS, accepted_text
from astrowatch.storage import safefs
from astrowatch.storage.layout import USERS, Layout, check_name, is_ignored_name
from astrowatch.storage.safefs import Staged, Unreadable

PHOTO_CHECK_MODULE = "astrowatch.api.photocheck"
RETRY_AFTER_UPLOADS = "60"  # seconds: the daemon takes a dropped photo within seconds, then enhances it
# the routes whose bodies the API's 64 KB guard lets through: they apply their own limits as they read
STREAMED = re.compile(r"^/api/users/[^/]+/(theme|photos)$")


class Stored(BaseModel):
    user: str
    files: list[str]
    paths: list[str]


def pending_uploads(layout: Layout, user: str) -> int:
    """Photos in ``Utilisateurs/<user>/`` the daemon has not taken yet (it moves them out when it does)."""
    theme_png = f"theme_{user.lower()}.png"
    try:
        with safefs.open_dir(layout.user_dir(user), layout.root) as dfd, os.scandir(dfd) as entries:
            return sum(1 for e in entries if e.is_file(follow_symlinks=False) and not is_ignored_name(e.name)
                       and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                       and e.name.lower() != theme_png and not e.name.lower().startswith("moodboard."))
    except Unreadable:
        return 0


async def read_capped(request: Request, cap: int, what: str) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise ApiError(413, f"{what} over {cap} bytes", "send a smaller file")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"{what} over {cap} bytes", "send a smaller file")
        chunks.append(chunk)
    return b"".join(chunks)


def store_theme(config: Config, layout: Layout, user: str, data: bytes) -> Stored:
    from astrowatch.chart.parse import parse_chart_bytes

    name = f"theme_{user}.json"
    limits = config.limits
    try:
        parse_chart_bytes(data, user=user, source=name, max_bytes=limits.max_json_bytes, max_depth=limits.max_json_depth)
    except (AstrowatchError, ValueError, RecursionError) as exc:
        raise ApiError(422, f"not a usable chart: {exc}", "see the theme formats in the documentation") from None
    safefs.write_bytes(layout.user_dir(user) / name, data, root=layout.root)
    return Stored(user=user, files=[name], paths=[f"{USERS}/{user}/{name}"])


def malformed(exc: MultipartParseError) -> ApiError:
    return ApiError(422, f"the multipart body is malformed: {exc}",
                    "send multipart/form-data with one or more 'file' parts: curl -F file=@photo.jpg ...")


def photo_name(raw: bytes) -> str:
    """The name a photo is stored under: the upload's base name, checked like any file name."""
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    try:
        check_name(name)
    except UnsafePathError as exc:
        raise ApiError(422, str(exc), "send the photo with a plain file name, e.g. photo.jpg") from None
    if is_ignored_name(name) or os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
        raise ApiError(422, f"{name!r} is not a photo name the daemon takes", f"accepted: {accepted_text()}")
    return name


class PhotoReceiver:
    """Feeds a multipart body to python-multipart, each ``file`` part into its own :class:`Staged`."""

    def __init__(self, layout: Layout, user: str, boundary: bytes, *, max_bytes: int, max_files: int) -> None:
        self.layout, self.user, self.max_bytes, self.max_files = layout, user, max_bytes, max_files
        self.parts: list[tuple[str, Staged]] = []
        self._headers: dict[bytes, bytes] = {}
        self._field, self._value = b"", b""
        self._current: Staged | None = None
        self._name = ""
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done, "on_part_data": self._data, "on_part_end": self._end})

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self) -> None:
        _disposition, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        if params.get(b"name") != b"file" or b"filename" not in params:
            raise ApiError(422, "only file parts named 'file' are accepted", "curl -F file=@photo.jpg ...")
        if len(self.parts) >= self.max_files:
            raise ApiError(429, f"more photos than {self.user} may have waiting (api.max_pending_uploads_per_user)",
                           "send fewer at once, or wait until the daemon has taken the others",
                           {"Retry-After": RETRY_AFTER_UPLOADS})
        self._name = photo_name(params[b"filename"])
        self._current = Staged(self.layout.user_dir(self.user), root=self.layout.root, hint="upload")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._current is None:
            return
        self._current.write(data[start:end])
        if self._current.size > self.max_bytes:
            raise ApiError(413, f"{self._name}: over {self.max_bytes} bytes (limits.max_image_bytes)",
                           "send a smaller photo")

    def _end(self) -> None:
        if self._current is not None:
            self.parts.append((self._name, self._current))
            self._current = None

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:  # a malformed body was a 500
            raise malformed(exc) from None

    def check_and_commit(self, config: Config) -> list[str]:
        from astrowatch.storage import sandbox

        try:
            self.parser.finalize()
        except MultipartParseError as exc:
            raise malformed(exc) from None
        if not self.parts:
            raise ApiError(422, "no photo in the request", "send multipart/form-data with one or more 'file' parts")
        limits = config.limits
        for name, staged in self.parts:
            os.lseek(staged.fd, 0, os.SEEK_SET)
            try:
                sandbox.run_child(PHOTO_CHECK_MODULE, {"max_pixels": limits.max_image_pixels}, fd=staged.fd,
                                  name=name, memory_mb=limits.decode_memory_mb, timeout_s=limits.decode_timeout_seconds,
                                  max_bytes=limits.max_image_bytes, what="photo check")
            except InputError as exc:
                raise ApiError(422, exc.message, f"accepted: {accepted_text()}") from None
        return [staged.commit(name) for name, staged in self.parts]

    def abort(self) -> None:
        for _name, staged in self.parts:
            staged.abort()
        if self._current is not None:
            self._current.abort()


def upload_routes(service: Service, config: Config) -> APIRouter:
    limits = config.limits
    router = APIRouter(prefix="/api", responses=errors(400, 413, 422))
    layout = service.layout
    theme_body = {"requestBody": {"required": True, "description": (
        f"the natal chart, in any theme format (see the documentation), at most {limits.max_json_bytes} bytes "
        "(limits.max_json_bytes); checked as a chart: 422 with the reason otherwise"),
        "content": {"application/json": {"schema": {"type": "object"}}}}}
    photos_body = {"requestBody": {"required": True, "description": (
        f"one or more photos, each at most {limits.max_image_bytes} bytes (limits.max_image_bytes) and "
        f"{limits.max_image_pixels} pixels, with a photo's file name (.jpg, .png, .heic...); each is decoded as "
        "the daemon will: 422 when one is not a usable image"),
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}

    @router.put("/users/{user}/theme", status_code=202, response_model=Stored, openapi_extra=theme_body,
                responses=errors(413, s413=f"the chart is over limits.max_json_bytes ({limits.max_json_bytes} bytes)"))
    async def put_theme(user: UserName, request: Request) -> Stored:
        """The user's natal chart (JSON body), checked as a chart, written as ``theme_<user>.json``."""
        name = service.user(user)
        data = await read_capped(request, config.limits.max_json_bytes, "the chart (limits.max_json_bytes)")
        return await to_thread.run_sync(store_theme, config, layout, name, data)

    @router.post("/users/{user}/photos", status_code=202, response_model=Stored, openapi_extra=photos_body,
                 responses=errors(413, 415, 429, s413=f"a photo is over limits.max_image_bytes "
                                  f"({limits.max_image_bytes} bytes)", s415="the body is not multipart/form-data",
                                  s429="api.max_pending_uploads_per_user photos of this user wait already"))
    async def post_photos(user: UserName, request: Request) -> Stored:
        """Photos (multipart, field ``file``, several allowed) for the user's dataset."""
        name = service.user(user)
        ctype, params = parse_options_header(request.headers.get("content-type"))
        if ctype != b"multipart/form-data" or not params.get(b"boundary"):
            raise ApiError(415, "send multipart/form-data", "curl -F file=@photo.jpg ...")
        limit = config.api.max_pending_uploads_per_user
        pending = await to_thread.run_sync(pending_uploads, layout, name)
        if pending >= limit:
            raise ApiError(429, f"{name} already has {pending} uploaded photos waiting (api.max_pending_uploads_per_user:"
                           f" {limit})", "retry when the daemon has taken them",
                           {"Retry-After": RETRY_AFTER_UPLOADS})
        receiver = PhotoReceiver(layout, name, params[b"boundary"], max_bytes=config.limits.max_image_bytes,
                                 max_files=limit - pending)
        try:
            async for chunk in request.stream():
                await to_thread.run_sync(receiver.feed, chunk)
            files = await to_thread.run_sync(receiver.check_and_commit, config)
        finally:
            await to_thread.run_sync(receiver.abort)
        return Stored(user=name, files=files, paths=[f"{USERS}/{name}/{f}" for f in files])

    return router
