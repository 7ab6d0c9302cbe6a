"""The HTTP API (FastAPI): ``POST /recommend``, ``POST /recommend/batch``, ``GET /items/{id}``, ``GET /health``.

Bad input never reaches the model: bodies are size-capped before parsing (413), request fields are
validated strictly (422 naming the field: ``k`` must be a JSON integer, ids integers or strings, no
unknown keys), and unknown item ids are a 422 that lists them unless the request asks to drop them.
Queries that arrive while the event loop is busy are ranked together in one forward pass
(micro-batching), which costs no waiting: a batch is whatever is queued when the loop gets to it.
"""

# No `from __future__ import annotations`: FastAPI must see the request classes built inside create_app.
import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Callable, Iterator, Literal, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, WithJsonSchema

import learec
from learec.errors import UserError
from learec.serve.catalog import UnknownItemsError
from learec.serve.recommender import Encoded, Query, Recommendation, Recommender

MAX_ID_CHARS = 256


@dataclass
class ServeSettings:
    """Limits of the API; requests beyond them get a 4xx naming the limit."""

    max_k: int = 1000  # also capped at the catalogue size
    max_history: int = 10_000  # ids in one history (the model itself reads only the last L)
    max_batch: int = 256  # queries in one /recommend/batch request
    max_body_bytes: int = 1 << 20
    micro_batch: int = 64  # most queries ranked in one forward pass; 1 turns micro-batching off


# --- request and response schemas ------------------------------------------------------------------

def _item_id(value: Any) -> int | str:
    # One clear message instead of pydantic's pair of union errors; bool is not an id although JSON
    # true would pass as int 1 in Python.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"an item id must be a string or an integer, not {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_ID_CHARS:
        raise ValueError(f"an item id has at most {MAX_ID_CHARS} characters")
    return value


ItemIdIn = Annotated[int | str, PlainValidator(_item_id),
                     WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": MAX_ID_CHARS}]})]


class ItemOut(BaseModel):
    id: int | str
    score: float
    text: str


class RecommendResponse(BaseModel):
    items: list[ItemOut] = Field(description="best first")
    fallback: Literal["popularity"] | None = Field(description="set when the history was empty")
    history_used: int = Field(description="items of the history the model read (its last L at most)")
    dropped_items: list[int | str] = Field(description="unknown ids dropped (with unknown_items=drop)")
    warnings: list[str]


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class ItemInfo(BaseModel):
    id: int | str
    text: str
    popularity: float = Field(description="training interactions of the item")


class ErrorResponse(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None
    unknown_items: list[Any] | None = None


def _request_models(max_k: int, max_history: int, max_batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Schemas carrying this server's limits, so the OpenAPI document states them."""

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[ItemIdIn] = Field(max_length=max_history, description=(
            "original item ids, oldest first; the model reads the last L (an empty list gets the popularity "
            "fallback)"))
        k: StrictInt = Field(min(10, max_k), ge=1, le=max_k, description="number of items to return")
        exclude_seen: StrictBool = Field(False, description="leave out every item of the history")
        unknown_items: Literal["error", "drop"] = Field(
            "error", description="'error': unknown ids are a 422 naming them; 'drop': ignored, with a warning")

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[RecommendRequest] = Field(max_length=max_batch)

    return RecommendRequest, BatchRequest


# --- micro-batching ----------------------------------------------------------------------------------

class MicroBatcher:
    """Ranks the queries queued during one turn of the event loop with one call of ``rank``.

    A submit schedules a flush with ``call_soon``; requests whose handlers run before that flush (the
    ones already read off their sockets) join it. Nothing waits on a timer, so a lone request is
    answered as fast as without batching.
    """

    def __init__(self, rank: Callable[[Sequence[Encoded]], list[Recommendation]], max_batch: int) -> None:
        self.rank = rank
        self.max_batch = max(1, max_batch)
        self._pending: list[tuple[list[Encoded], asyncio.Future]] = []
        self._scheduled = False
        self.batches = 0  # forward calls made, for /health and the benchmark
        self.queries = 0

    async def submit(self, queries: list[Encoded]) -> list[Recommendation]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((queries, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        while pending:  # groups of whole submissions, up to max_batch queries (a big batch request alone)
            group, size = [], 0
            while pending and (not group or size + len(pending[0][0]) <= self.max_batch):
                group.append(pending.pop(0))
                size += len(group[-1][0])
            self._run(group)

    def _run(self, group: list[tuple[list[Encoded], asyncio.Future]]) -> None:
        flat = [q for queries, _ in group for q in queries]
        try:
            results = self.rank(flat)
        except Exception as err:  # noqa: BLE001  (handed to each waiting request, which turns it into a 500)
            for _, future in group:
                if not future.done():
                    future.set_exception(err)
            return
        self.batches += 1
        self.queries += len(flat)
        start = 0
        for queries, future in group:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(results[start:start + len(queries)])
            start += len(queries)


# --- the size cap -------------------------------------------------------------------------------------

class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) is a 413 before anything parses it."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send: Callable) -> None:
        body = json.dumps({"detail": f"request body larger than {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._too_large(send)
                return
        chunks, size = [], 0
        while True:  # read the whole (bounded) body here, then replay it to the app
            message = await receive()
            if message["type"] != "http.request":
                return  # the client disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- the app -----------------------------------------------------------------------------------------

def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors, lines = [], []
    for e in exc.errors()[:20]:  # a bad 10,000-item history need not echo 10,000 errors
        loc = [str(p) for p in e.get("loc", ())]
        where = ".".join(loc[1:] if loc[:1] == ["body"] and len(loc) > 1 else loc) or "body"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        ctx = e.get("ctx") or {}
        if e.get("type") == "json_invalid":
            where = f"body (character {loc[1]})" if len(loc) > 1 else "body"
            msg = f"{msg}: {ctx['error']}" if "error" in ctx else msg
        elif where == "body" and e.get("type") == "model_attributes_type":
            msg = "the body must be a JSON object, sent with Content-Type: application/json"
        errors.append({"loc": loc, "msg": msg, "type": str(e.get("type", ""))})
        lines.append(f"{where}: {msg}")
    more = len(exc.errors()) - len(errors)
    detail = "invalid request: " + "; ".join(lines) + (f"; and {more} more errors" if more > 0 else "")
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def _unknown_response(unknown: list[dict[str, Any]], detail: str) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": detail, "unknown_items": unknown})


def create_app(rec: Recommender, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``rec`` under ``settings``."""
    settings = settings or ServeSettings()
    max_k = max(1, min(settings.max_k, rec.n_items))
    RecommendRequest, BatchRequest = _request_models(max_k, settings.max_history, settings.max_batch)
    batcher = MicroBatcher(rec.rank, settings.micro_batch)
    summary = rec.summary()
    errors = {413: {"model": ErrorResponse, "description": "body too large"},
              422: {"model": ErrorResponse, "description": "invalid request or unknown item ids"}}

    app = FastAPI(title="learec recommender", version=learec.__version__,
                  description=f"{summary['backbone']} / {summary['objective']} on {summary['dataset']}: "
                  f"{summary['n_items']} items, history length {summary['history_length']}. Item ids are the "
                  "dataset's original ids.")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    @app.exception_handler(UserError)
    async def _user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": exc.message})

    def encode(req: Any) -> Encoded:
        return rec.encode(Query(req.history, req.k, req.exclude_seen, req.unknown_items))

    @app.post("/recommend", response_model=RecommendResponse, responses=errors,
              summary="top-k items after a history of original item ids")
    async def recommend(req: RecommendRequest) -> JSONResponse:  # type: ignore[valid-type]
        try:
            query = encode(req)
        except UnknownItemsError as err:
            return _unknown_response(err.unknown, err.message)
        result = (await batcher.submit([query]))[0]
        return JSONResponse(result.to_dict())

    @app.post("/recommend/batch", response_model=BatchResponse, responses=errors,
              summary="several /recommend queries in one request (one forward pass)")
    async def recommend_batch(req: BatchRequest) -> JSONResponse:  # type: ignore[valid-type]
        queries, unknown = [], []
        for i, one in enumerate(req.requests):
            try:
                queries.append(encode(one))
            except UnknownItemsError as err:
                unknown.append({"index": i, "ids": err.unknown})
        if unknown:
            where = ", ".join(f"requests[{u['index']}]" for u in unknown[:20])
            return _unknown_response(unknown, f"unknown item id(s) in {where}; see unknown_items, or set "
                                     "\"unknown_items\": \"drop\" on those requests")
        results = await batcher.submit(queries) if queries else []
        return JSONResponse({"results": [r.to_dict() for r in results]})

    @app.get("/items/{item_id:path}", response_model=ItemInfo, summary="an item's text and popularity",
             responses={404: {"model": ErrorResponse, "description": "unknown item id"}})
    async def item(item_id: str) -> JSONResponse:
        index = rec.catalog.index_of(item_id)
        if index is None:
            return JSONResponse(status_code=404, content={"detail": f"unknown item id {item_id[:80]!r}"})
        return JSONResponse(rec.catalog.describe(index))

    @app.get("/health", summary="liveness, the model served and the API's limits")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": summary, "limits": {**asdict(settings), "max_k": max_k},
                "micro_batches": {"forward_calls": batcher.batches, "queries": batcher.queries}}

    return app


def serve(rec: Recommender, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          log_level: str = "info", access_log: bool = False) -> None:
    """Run the API with uvicorn until interrupted."""
    import gc

    import uvicorn

    app = create_app(rec, settings)
    # torch and FastAPI leave ~200,000 long-lived objects; a full collection walking them stalled every
    # in-flight request by ~110 ms (the p99). Frozen, they are skipped: full collections take ~2 ms.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a daemon thread (tests, notebooks) and yield its base URL.

    Port 0 picks a free port; the socket is bound here, so the URL is known before the server starts.
    """
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="learec-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the API server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
