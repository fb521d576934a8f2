"""Reading multipart uploads without trusting their size.

FastAPI reads a request's whole body (to memory or a temporary file) before any dependency runs,
so an endpoint that declares `UploadFile` or `Form` parameters receives 600 MB from anyone before
it can say 401. Upload endpoints therefore declare only header-level dependencies (who is
asking), and read the body here: refused at once when Content-Length is over the limit, and cut
off with 413 as soon as a chunked body passes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, UploadFile

# multipart boundaries and the small text fields around the file
FORM_OVERHEAD_BYTES = 64 * 1024

BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def multipart_form(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for an endpoint that reads its multipart form itself (`openapi_extra`)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


MULTIPART_FILE = multipart_form(["file"], {"file": BINARY})


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than {limit} bytes")


def _counting(receive: Callable[[], Awaitable[Any]], limit: int) -> Callable[[], Awaitable[Any]]:
    received = 0

    async def counted() -> Any:
        nonlocal received
        message = await receive()
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(limit)
        return message

    return counted


async def read_form(request: Request, file_limit: int, max_fields: int = 4) -> FormData:
    """The request's multipart form, never more than `file_limit` (+ form overhead) bytes read."""
    limit = file_limit + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length")
        if int(declared) > limit:
            raise _too_large(file_limit)
    limited = Request(request.scope, _counting(request.receive, limit))
    try:
        return await limited.form(max_files=1, max_fields=max_fields)
    except HTTPException:
        raise
    except Exception as exc:  # a malformed multipart body
        raise HTTPException(400, f"not a multipart form: {exc}") from exc


async def file_bytes(form: FormData, name: str, limit: int) -> bytes:
    item = form.get(name)
    if not isinstance(item, UploadFile):
        raise HTTPException(422, f"a file field {name!r} is needed")
    data = await item.read(limit + 1)
    if len(data) > limit:
        raise _too_large(limit)
    return data


def text_field(form: FormData, name: str, max_length: int) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_length:
        raise HTTPException(422, f"{name} must be text of at most {max_length} characters")
    return value
