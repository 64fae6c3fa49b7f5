"""The ASGI layers around the app: a bound on request bodies and one JSON access-log line per
request (for log collectors: one object per line, no secrets, the token's name only)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid

ACCESS_LOGGER = "kpi_engine.access"
SERVER_LOGGER = "kpi_engine.serve"
_ERROR_CONTENT = b"application/json"


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413, before the app reads them."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        chunks, size, more = [], 0, True
        while more:  # read the whole (bounded) body, then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        from .models import error_content
        from .service import TooLarge

        error = TooLarge(f"the request body is larger than {self.max_bytes:,} bytes, this server's limit.", None,
                         "Send a smaller request.")
        body = json.dumps(error_content(error)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", _ERROR_CONTENT), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One JSON line per HTTP request on the ``kpi_engine.access`` logger, and an X-Request-ID."""

    def __init__(self, app, logger: logging.Logger | None = None):
        self.app = app
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        facts: dict = {"status": 500, "bytes": 0}

        async def watch(message):
            if message["type"] == "http.response.start":
                facts["status"] = message["status"]
                headers = list(message.get("headers") or [])
                facts["cache"] = dict(headers).get(b"x-kpi-cache", b"").decode() or None
                message = {**message, "headers": headers + [(b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                facts["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            client = scope.get("client")
            self.logger.info(json.dumps({
                "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                "event": "request", "request_id": request_id, "method": scope.get("method"),
                "path": scope.get("path"), "status": facts["status"], "bytes": facts["bytes"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client[0] if client else None, "token": state.get("token"),
                "cache": facts.get("cache"), "rows": state.get("rows")}))


class _JsonLines(logging.Formatter):
    """Server errors as one JSON object per line too, the traceback in a field."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
                "event": "log", "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logs(stream=None) -> None:
    """Access-log lines, as they are, and the server's own messages as JSON lines, on ``stream``
    (default: standard error), apart from whatever other libraries configure."""
    for name, formatter in ((ACCESS_LOGGER, logging.Formatter("%(message)s")), (SERVER_LOGGER, _JsonLines())):
        logger = logging.getLogger(name)
        if not any(getattr(h, "kpi_engine_serve", False) for h in logger.handlers):
            handler = logging.StreamHandler(stream)
            handler.setFormatter(formatter)
            handler.kpi_engine_serve = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
