"""The local explorer app: type a prompt (or a second one to compare), get its explorer.

A real :mod:`http.server` on 127.0.0.1 by default. The model and lenses are loaded once; one
worker thread runs every model call, batching the prompts of requests that arrive within a few
milliseconds of each other (:class:`_Batcher`). Limits, each answered with a JSON error that
says what to change: the body size (413), prompts per request and tokens per prompt (413),
the content type (415), malformed JSON or options (400), and the number of requests computed
at once (others wait; beyond ``max_waiting`` they get 503). A request is parsed with
:func:`json.loads` and read as plain strings and numbers; nothing in it is evaluated as code.

``tuned-lens serve --model glassllm --lens logit`` starts it (:func:`run_serve`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, RequestError
from ._app_page import APP_PAGE
from ._build import build_data
from .page import render_html

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.lenses import Lens
    from ..plotting import CompactTrajectory, TokenFormatter
    from ..types import CausalLM

__all__ = ["ExplorerApp", "RequestError", "ServerLimits", "start_server"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for, and how many are computed at once.

    Attributes:
        max_tokens: Tokens per prompt.
        max_prompts: Prompts per request.
        max_body_bytes: Size of a request body.
        max_concurrent: Requests computed at once; the others wait.
        max_waiting: Requests allowed to wait; beyond that, 503 at once.
        wait_s: How long a request waits for its turn before a 503.
        max_batch: Prompts per model call.
        batch_window_s: How long the worker waits for more prompts to batch.
    """

    max_tokens: int = 512
    max_prompts: int = 8
    max_body_bytes: int = 256 * 1024
    max_concurrent: int = 4
    max_waiting: int = 64
    wait_s: float = 60.0
    max_batch: int = 16
    batch_window_s: float = 0.005


@dataclass
class _Job:
    prompts: list[list[int]]
    lenses: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, CompactTrajectory] | None = None
    error: BaseException | None = None


class _Batcher:
    """One worker thread: the only caller of the model, batching jobs that arrive together."""

    def __init__(self, app: ExplorerApp) -> None:
        self._app = app
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="explorer-batcher", daemon=True)
        self._thread.start()

    def run(self, job: _Job) -> dict[str, CompactTrajectory]:
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _collect(self, first: _Job) -> list[_Job]:
        jobs, count = [first], len(first.prompts)
        deadline = time.monotonic() + self._app.limits.batch_window_s
        while count < self._app.limits.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            count += len(job.prompts)
        return jobs

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = self._collect(first)
            try:
                self._compute(jobs)
            except BaseException as err:  # noqa: BLE001 - handed to the waiting requests
                for job in jobs:
                    job.error = err
            for job in jobs:
                job.done.set()

    def _compute(self, jobs: list[_Job]) -> None:
        prompts = [p for job in jobs for p in job.prompts]
        names = sorted({name for job in jobs for name in job.lenses})
        by_lens = {name: self._app.trajectory(name, prompts) for name in names}
        start = 0
        for job in jobs:
            keep = list(range(start, start + len(job.prompts)))
            job.result = {name: by_lens[name].select_prompts(keep) for name in job.lenses}
            start += len(job.prompts)


class ExplorerApp:
    """The model, its lenses, the limits and the batcher behind the HTTP server.

    Args:
        model: A Hugging Face causal LM (loaded once).
        tokenizer: Its tokenizer.
        lenses: ``{name: lens}`` offered to the user.
        limits: What a request may ask for.
        topk: Top tokens kept per cell.
        formatter: How tokens are shown (default ``TokenFormatter()``).
        model_name: Shown on the page.
    """

    def __init__(
        self,
        model: CausalLM,
        tokenizer: Any,
        lenses: Mapping[str, Lens],
        *,
        limits: ServerLimits | None = None,
        topk: int = 10,
        formatter: TokenFormatter | None = None,
        model_name: str = "",
    ) -> None:
        if not lenses:
            raise InvalidInputError("the app needs at least one lens", option="lenses")
        self.model, self.tokenizer, self.lenses = model, tokenizer, dict(lenses)
        self.limits = limits or ServerLimits()
        self.topk, self.formatter, self.model_name = topk, formatter, model_name
        self._slots = threading.BoundedSemaphore(self.limits.max_concurrent)
        self._waiting = 0
        self._lock = threading.Lock()
        self._batcher = _Batcher(self)

    def close(self) -> None:
        """Stop the worker thread."""
        self._batcher.close()

    def trajectory(self, lens: str, prompts: list[list[int]]) -> CompactTrajectory:
        """The compact trajectory of one lens over prompts (called by the worker thread)."""
        from ..plotting import CompactTrajectory

        return CompactTrajectory.from_lens_and_model(
            self.lenses[lens],
            self.model,
            prompts,
            tokenizer=self.tokenizer,
            targets="next",
            topk=self.topk,
            batch_size=self.limits.max_batch,
            progress=False,
        )

    # ------------------------------------------------------------------ requests
    def _prompts(self, payload: dict[str, Any]) -> list[list[int]]:
        texts = payload.get("prompts")
        if texts is None:
            texts = [
                payload.get("prompt"),
                *([payload["compare"]] if payload.get("compare") else []),
            ]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"prompt" (or "prompts") must be text')
        if any(not t.strip() for t in texts):
            raise RequestError(HTTPStatus.BAD_REQUEST, "a prompt is empty: type some text")
        if len(texts) > self.limits.max_prompts:
            raise RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"{len(texts)} prompts; at most {self.limits.max_prompts} per request",
            )
        prompts = []
        for n, text in enumerate(texts):
            if len(text) > 16 * self.limits.max_tokens:  # long before tokenizing it
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"prompt {n} is too long: {len(text)} characters; at most "
                    f"{self.limits.max_tokens} tokens are allowed",
                )
            ids = list(self.tokenizer(text).input_ids)
            if len(ids) > self.limits.max_tokens:
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"prompt {n} is too long: {len(ids)} tokens; at most "
                    f"{self.limits.max_tokens} are allowed",
                )
            prompts.append(ids)
        return prompts

    def _lens_names(self, payload: dict[str, Any]) -> tuple[str, ...]:
        names = payload.get("lenses", list(self.lenses))
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"lenses" must be a list of lens names')
        unknown = [n for n in names if n not in self.lenses]
        if unknown:
            raise RequestError(
                HTTPStatus.BAD_REQUEST,
                f"unknown lens {unknown[0]!r}; this server has {', '.join(self.lenses)}",
            )
        return tuple(dict.fromkeys(names))

    def document(self, payload: Any) -> dict[str, Any]:
        """The explorer document for a request's JSON payload.

        Raises:
            RequestError: The payload asks for something the limits or the lenses refuse, or
                too many requests are waiting.
        """
        if not isinstance(payload, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        prompts, names = self._prompts(payload), self._lens_names(payload)
        stat = payload.get("stat")
        if stat is not None and not isinstance(stat, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"stat" must be a statistic name')
        with self._lock:
            if self._waiting >= self.limits.max_waiting:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "too many requests; retry")
            self._waiting += 1
        try:
            if not self._slots.acquire(timeout=self.limits.wait_s):
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "the server is busy; retry")
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            trajectories = self._batcher.run(_Job(prompts, names))
            data = build_data(
                trajectories, formatter=self.formatter, model=self.model_name, title="explorer"
            )
        finally:
            self._slots.release()
        if stat:
            data["state"] = "stat=" + "".join(c for c in stat if c.isalnum() or c == "_")
        return data


def _handler(app: ExplorerApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tuned-lens-explorer"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: HTTPStatus, value: Any) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._json(status, {"error": message, "status": int(status)})

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, APP_PAGE(app).encode(), "text/html; charset=utf-8")
            elif self.path == "/health":
                self._json(HTTPStatus.OK, {"ok": True, "lenses": list(app.lenses)})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no page {self.path!r}; try / or /api/explore")

        def _body(self) -> Any:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
            if int(length) > app.limits.max_body_bytes:
                self.close_connection = True
                raise RequestError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the body has {length} bytes; at most {app.limits.max_body_bytes}",
                )
            kind = self.headers.get("Content-Type", "").split(";")[0].strip()
            if kind != "application/json":
                self.close_connection = True
                raise RequestError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)"
                )
            try:
                return json.loads(self.rfile.read(int(length)).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {err}") from None

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            try:
                if self.path not in ("/api/explore", "/api/data"):
                    raise RequestError(HTTPStatus.NOT_FOUND, f"no endpoint {self.path!r}")
                data = app.document(self._body())
                if self.path == "/api/data":
                    self._json(HTTPStatus.OK, data)
                else:
                    self._json(HTTPStatus.OK, {"html": render_html(data)})
            except RequestError as err:
                self._error(HTTPStatus(err.status), str(err))
            except InvalidInputError as err:
                self._error(HTTPStatus.BAD_REQUEST, str(err))

    return Handler


class _Server(ThreadingHTTPServer):
    """socketserver's listen backlog is 5: a burst of 20 connections overflowed it while the
    accepting thread waited for the interpreter, and the kernel reset some of them."""

    request_queue_size = 128
    daemon_threads = True


def start_server(
    app: ExplorerApp, host: str = "127.0.0.1", port: int = 0
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve ``app`` from a background thread.

    Args:
        app: The app.
        host: The address to listen on (127.0.0.1: this machine only).
        port: The port (0: any free one; read ``server.server_address``).

    Returns:
        The server (``shutdown()`` stops it) and its thread.
    """
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: other machines can reach this server", host)
    server = _Server((host, port), _handler(app))
    thread = threading.Thread(target=server.serve_forever, name="explorer-http", daemon=True)
    thread.start()
    return server, thread
