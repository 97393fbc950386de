"""Captioning with a model server: an OpenAI-compatible chat-completions endpoint.

Ollama, LM Studio, llama.cpp's ``llama-server`` and ``vllm serve`` all speak the same
``POST {endpoint}/chat/completions`` dialect, so one backend drives them all.
:class:`ServerCaptioner` has the :class:`~core.captioning.captioner.Captioner` interface, so
:func:`core.captioning.engine.run_caption_job` drives it like a local model:

* ``preprocess`` (decode-ahead threads) shrinks each image to at most
  ``max_image_side`` pixels and JPEG-encodes it into a ``data:`` URL: a 24-megapixel
  photo would be ~10 MB of base64 and no vision model looks at more than ~1-2k pixels.
* ``generate`` sends a batch's images concurrently, at most ``max_concurrency``
  requests in flight (one shared ``httpx2.Client`` whose pool has that many
  connections), retrying 429 (honouring ``Retry-After``), 5xx, timeouts and dropped
  connections with exponential back-off.  Each request has a wall-clock deadline
  (``timeout``, the spec's ``server_timeout``; the reachability check at most
  :data:`MAX_CHECK_SECONDS`) however slowly the server trickles its answer, and its
  answer a size bound (room for ``max_caption_chars``; a model list
  :data:`MAX_MODEL_LIST_BYTES`): reading stops there.  An answer that began but did not
  finish in time, or is too big, is that image's error at once (not retried).  A
  request that still fails becomes that image's error (the engine marks it, like a
  local decoding failure) — except a server
  that cannot be reached at all, refuses the API key or has no such model (404): that is one
  :class:`~core.captioning.errors.ModelLoadError` (kind ``"server"``) for the whole
  job, raised before anything is written, so nothing is lost and the same command
  resumes once the server is up.
* Every request asks for the generated tokens' log-probabilities (``"logprobs": true``;
  vLLM, llama.cpp's server and OpenAI send them) so a server caption gets the same
  confidence score as a local model's (their mean, ``mean_logprob``).  A server that
  answers 400 naming ``logprobs`` (or an unknown/unsupported parameter) gets the image
  again without it, and no further request of this captioner asks for them: the
  captions then simply have no score.

The API key comes from ``$CAPTIONDESK_API_KEY``, ``$OPENAI_API_KEY`` or the OS keyring
(service ``captiondesk``, user = the endpoint's host) and lives only in the client's
headers: it is never part of the spec, the provenance (which records the endpoint's
``host:port`` and the model), the job record or a log line.  Any server text is
scrubbed of it before it is shown — in any case, a piece of it, JSON-escaped — and a
200 answer whose caption holds it is that image's error, never stored.

``httpx2`` (the maintained successor of ``httpx``, already installed as a dependency of
``huggingface_hub``) is imported lazily so building a spec does not load it.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from core.captions import DEFAULT_MODEL_CAPTION_CHARS

from .captioner import Captioner, CaptionResult
from .endpoints import endpoint_host, normalize_endpoint
from .errors import GenerationError, ModelLoadError

if TYPE_CHECKING:
    import httpx2
    from PIL import Image

    from .settings import GenerationSettings

__all__ = [
    "DEFAULT_SERVER_PROMPT",
    "ServerCaptioner",
    "endpoint_host",
    "list_server_models",
    "load_server_captioner",
    "normalize_endpoint",
    "resolve_api_key",
]

log = logging.getLogger(__name__)

#: Environment variables searched for the API key, in this order.
API_KEY_VARIABLES = ("CAPTIONDESK_API_KEY", "OPENAI_API_KEY")
#: OS keyring service name (the user name is the endpoint's host).
KEYRING_SERVICE = "captiondesk"
#: The instruction sent when the settings have no prompt (a chat model needs one).
DEFAULT_SERVER_PROMPT = "Write a one-sentence caption describing this photo. Reply with the caption only."
#: Longest side of an uploaded image.
DEFAULT_MAX_IMAGE_SIDE = 1024
#: Longest wait a server's Retry-After may impose before one retry.
MAX_RETRY_AFTER_S = 60.0
#: The most a model list may weigh (a few thousand names); a bigger one is not read.
MAX_MODEL_LIST_BYTES = 1024 * 1024
#: Wall-clock bound of the "does the server answer" check, at most.
MAX_CHECK_SECONDS = 10.0
#: A run of this many characters of the API key (any case, JSON-escaped or not) in a
#: server's text counts as the key; shorter keys count whole.
KEY_PIECE = 8
_RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: How servers word a 400 for a request parameter they do not take (checked lower-cased,
#: with "logprob" itself): pydantic's "extra inputs are not permitted", OpenAI's
#: "unrecognized request argument", "unknown/unsupported parameter" and the like.
_UNKNOWN_PARAMETER_WORDS = ("logprob", "unrecognized request argument", "unknown parameter", "unsupported parameter",
                            "unknown field", "unknown argument", "unsupported argument", "extra inputs are not permitted",
                            "extra fields not permitted", "unexpected keyword")


# --------------------------------------------------------------------------- endpoints


def resolve_api_key(endpoint: str | None = None) -> str | None:
    """The API key: ``$CAPTIONDESK_API_KEY``, ``$OPENAI_API_KEY``, else the OS keyring
    (``keyring`` package, if installed: service ``captiondesk``, user = endpoint host).
    ``None`` when there is none (local servers usually need none)."""
    for name in API_KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        import keyring
    except ImportError:
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, endpoint_host(endpoint) if endpoint else "default")
    except Exception as exc:  # noqa: BLE001 - a broken keyring backend must not stop captioning
        log.info("no API key from the OS keyring (%s)", type(exc).__name__)
        return None
    return value or None


def _server_root(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _is_loopback(endpoint: str) -> bool:
    import ipaddress

    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client(endpoint: str, api_key: str | None, *, timeout: float, connections: int) -> httpx2.Client:
    import httpx2

    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    client = httpx2.Client(
        headers=headers,
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx2.Limits(max_connections=connections, max_keepalive_connections=connections),
        # A server on this machine is never reached through a system proxy (which would
        # see the key); a remote one honours the proxy and CA settings of the environment.
        trust_env=not _is_loopback(endpoint),
    )
    # Socket timeouts bound each read, not the request: every connection's reads and
    # writes also stop at the calling thread's deadline (_deadline), so a server that
    # trickles its answer cannot hold a request open past it.
    backend = _deadline_backend()
    for transport in (client._transport, *client._mounts.values()):  # noqa: SLF001 - no public hook
        pool = getattr(transport, "_pool", None)
        if pool is not None and not isinstance(pool._network_backend, backend):  # noqa: SLF001
            pool._network_backend = backend(pool._network_backend)  # noqa: SLF001
    return client


# --------------------------------------------------------------------------- bounds


class _Deadline:
    """The wall-clock end of one request, and whether any of its answer arrived."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.received = 0


_CURRENT = threading.local()


@contextmanager
def _deadline(seconds: float) -> Iterator[_Deadline]:
    """Requests made by this thread inside the block end (a timeout) after *seconds* in all."""
    deadline = _Deadline(seconds)
    _CURRENT.deadline = deadline
    try:
        yield deadline
    finally:
        _CURRENT.deadline = None
        _CURRENT.last_received = deadline.received


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """*timeout* shortened to what is left of this thread's deadline; *error* once it passed."""
    deadline: _Deadline | None = getattr(_CURRENT, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline.end - time.monotonic()
    if left <= 0:
        raise error(f"no answer within {deadline.seconds:g} s")
    return left if timeout is None else min(timeout, left)


def _note_received(count: int) -> None:
    deadline: _Deadline | None = getattr(_CURRENT, "deadline", None)
    if deadline is not None:
        deadline.received += count


@functools.cache
def _deadline_backend() -> type:
    """httpcore's network backend whose streams obey the calling thread's :func:`_deadline`
    (a class made on first use: httpcore2 is imported lazily)."""
    import httpcore2

    class Stream(httpcore2.NetworkStream):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            data = self._inner.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))
            _note_received(len(data))
            return data

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _left(timeout, httpcore2.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
            return Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore2.ConnectTimeout)))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class Backend(httpcore2.NetworkBackend):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Any = None) -> Any:
            return Stream(self._inner.connect_tcp(host, port, _left(timeout, httpcore2.ConnectTimeout),
                                                  local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
            return Stream(self._inner.connect_unix_socket(path, _left(timeout, httpcore2.ConnectTimeout),
                                                          socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return Backend


class AnswerTooLarge(ValueError):
    """A server's answer is bigger than the bound for its kind; the rest was not read."""


def _bounded_request(client: httpx2.Client, method: str, url: str, *, seconds: float, max_bytes: int,
                     **kwargs: Any) -> httpx2.Response:
    """*client*'s answer to one request, read whole, within *seconds* and *max_bytes*.

    :class:`AnswerTooLarge` when the body (as decoded) would exceed *max_bytes*: reading
    stops there and the connection is dropped.  A timeout (``httpx2.TimeoutException``)
    when the whole exchange takes longer than *seconds*; ``_CURRENT.last_received``
    then says whether the server had begun to answer.
    """
    import httpx2

    with _deadline(seconds) as deadline, client.stream(method, url, **kwargs) as response:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise AnswerTooLarge(f"the server's answer has {int(declared):,} bytes, more than {max_bytes:,}; not read")
        chunks, size = [], 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise AnswerTooLarge(f"the server's answer is longer than {max_bytes:,} bytes; not read")
                chunks.append(chunk)
        except httpx2.TimeoutException:
            deadline.received = max(deadline.received, 1)  # the headers had come: it had begun to answer
            raise
    # The body is already decoded: the new response must not decode it again.
    headers = [(name, value) for name, value in response.headers.multi_items()
               if name.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx2.Response(response.status_code, headers=headers, content=b"".join(chunks),
                           request=response.request)


def _unreachable(endpoint: str, exc: BaseException, seconds: float | None = None) -> ModelLoadError:
    import httpx2

    if isinstance(exc, httpx2.TimeoutException) and seconds is not None:
        return ModelLoadError(
            f"The model server at {endpoint} did not answer within {seconds:g} s. Is it overloaded or stuck? "
            "Check it, or allow more time with --server-timeout; nothing was changed.",
            kind="server", model=endpoint,
        )
    return ModelLoadError(
        f"The model server at {endpoint} cannot be reached ({type(exc).__name__}: {exc}). "
        "Is it running? Start it (e.g. `ollama serve`) or check --endpoint; nothing was changed, "
        "run the same command again once it is up.",
        kind="server", model=endpoint,
    )


def list_server_models(endpoint: str, *, api_key: str | None = None, timeout: float = 5.0) -> list[str]:
    """The model names a server offers, sorted, for the GUI's model picker.

    Asks the OpenAI ``GET {endpoint}/models`` first; Ollama's own ``GET /api/tags``
    when that is missing.  ``ModelLoadError`` (kind ``"server"``) when the server
    cannot be reached or answers neither.  *endpoint* is the text a person typed, so it is
    normalized here; :func:`load_server_captioner` passes the spec's, normalized already.
    """
    return _server_models(normalize_endpoint(endpoint), api_key=api_key, timeout=timeout)


def _server_models(endpoint: str, *, api_key: str | None, timeout: float) -> list[str]:
    """:func:`list_server_models` for a normalized *endpoint*."""
    import httpx2

    key = api_key if api_key is not None else resolve_api_key(endpoint)
    seconds = min(timeout, MAX_CHECK_SECONDS)
    with _client(endpoint, key, timeout=seconds, connections=1) as client:
        attempts: list[tuple[str, Callable[[Any], list[str]]]] = [
            (f"{endpoint}/models", lambda body: [str(m["id"]) for m in body["data"]]),
            (f"{_server_root(endpoint)}/api/tags", lambda body: [str(m["name"]) for m in body["models"]]),
        ]
        problems = []
        for url, names in attempts:
            try:
                response = _bounded_request(client, "GET", url, seconds=seconds, max_bytes=MAX_MODEL_LIST_BYTES)
            except httpx2.TransportError as exc:
                raise _unreachable(endpoint, exc, seconds) from None
            except AnswerTooLarge as exc:
                problems.append(f"{urlsplit(url).path}: {exc}")
                continue
            if response.status_code in (401, 403):
                raise _refused(endpoint, response, key)
            try:
                response.raise_for_status()
                # A name holding the key would be shown, picked and stored as provenance.
                return sorted({name for name in names(response.json()) if not _holds_key(name, key)})
            except (httpx2.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
                problems.append(f"{urlsplit(url).path}: {_shown(str(exc), key, 120)}")
    raise ModelLoadError(f"The server at {endpoint} did not list its models ({'; '.join(problems)}).",
                         kind="server", model=endpoint)


# --------------------------------------------------------------------------- errors


_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\"\\/])")


def _unescape_json(text: str) -> str:
    r"""*text* with JSON string escapes (``\u0073``, ``\/``) decoded, as a person would read it."""
    return _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), text)


def _mask_key(text: str, key: str) -> str:
    """*text* with every run of :data:`KEY_PIECE` or more characters of *key* (any case) as ``***``."""
    folded = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    secret = key.lower()
    size = min(len(secret), KEY_PIECE)
    pieces = {secret[i:i + size] for i in range(len(secret) - size + 1)}
    out, i = [], 0
    while i < len(folded):
        if folded[i:i + size] in pieces:
            end = i + size
            while end < len(folded) and folded[i:end + 1] in secret:
                end += 1
            out.append("***")
            i = end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _scrub(text: str, key: str | None) -> str:
    """*text* from a server, fit to show: without the API key in any case, cut or escaped.

    A server may echo the Authorization header back, lower-cased, shortened or inside a
    JSON body; any run of :data:`KEY_PIECE` characters of the key becomes ``***``, and
    text that still holds the key once percent-decoded is not shown at all.
    """
    if not key:
        return text
    shown = _mask_key(_unescape_json(text), key)
    decoded = unquote(shown)
    if decoded != shown and _mask_key(decoded, key) != decoded:
        return "(not shown: the server's text contained the API key)"
    return shown


def _shown(text: str, key: str | None, limit: int) -> str:
    """At most *limit* characters of :func:`_scrub`'s *text*; only a head of a huge body is
    scrubbed, with room for the key JSON-escaped across the cut."""
    return _scrub(text[: limit + 8 * len(key or "")], key)[:limit]


def _holds_key(text: str, key: str | None) -> bool:
    """Whether *text* holds the API key in any form :func:`_scrub` hides."""
    return bool(key) and _scrub(text, key) != _unescape_json(text)


def _error_message(response: httpx2.Response, key: str | None) -> str:
    """The server's own explanation: the OpenAI error object's message, else the body's start."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return _shown(str(message), key, 300)
    except ValueError:
        pass
    return _shown(response.text.strip(), key, 200) or response.reason_phrase


def _refused(endpoint: str, response: httpx2.Response, key: str | None) -> ModelLoadError:
    hint = ("set CAPTIONDESK_API_KEY (or OPENAI_API_KEY) to a valid key" if key is None
            else "the key in CAPTIONDESK_API_KEY / OPENAI_API_KEY / the keyring is not accepted")
    return ModelLoadError(
        f"The model server at {endpoint} refused the request (HTTP {response.status_code}: "
        f"{_error_message(response, key)}); {hint}.",
        kind="server", model=endpoint,
    )


def _refuses_parameter(response: httpx2.Response) -> bool:
    """True when a 400 answer says a request parameter is not accepted (``logprobs``)."""
    text = response.text.lower()
    return any(words in text for words in _UNKNOWN_PARAMETER_WORDS)


def _token_logprobs(logprobs: Any) -> list[float]:
    """The finite ``logprob`` values of an OpenAI ``choices[0].logprobs`` object
    (``{"content": [{"token", "logprob", ...}, ...]}``); [] when there are none."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    values = []
    for token in content:
        value = token.get("logprob") if isinstance(token, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values.append(min(0.0, float(value)))
    return values


class ServerRequestError(GenerationError):
    """One image's request failed for good (after retries, or a non-retryable answer)."""


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to back-off


# --------------------------------------------------------------------------- captioner


@dataclass(frozen=True)
class ServerBatch:
    """Preprocessed images: JPEG ``data:`` URLs, and the prompt they go with."""

    urls: list[str]
    prompt: str


class ServerCaptioner(Captioner):
    """A model behind an OpenAI-compatible chat-completions endpoint.

    Thread-safety: :meth:`preprocess` is pure; :meth:`generate` may run from one thread
    at a time (it fans out to its own pool of ``max_concurrency`` threads).
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 4,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
        jpeg_quality: int = 85,
        max_caption_chars: int = DEFAULT_MODEL_CAPTION_CHARS,
    ) -> None:
        self.endpoint = endpoint  # normalized when the job's spec was made (CaptionJobSpec)
        self.timeout = float(timeout)
        #: An answer bigger than this is not read: room for the caption (up to 4 bytes a
        #: character, JSON-escaped) and its token log-probabilities, plus the envelope.
        self.max_answer_bytes = 64 * 1024 + 64 * max(1, int(max_caption_chars))
        self.model = model
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.max_image_side = max_image_side
        self.jpeg_quality = jpeg_quality
        #: Decode JPEGs at a draft scale near the upload size (read by the engine).
        # The engine decodes for this side (JPEG draft), then the upload is resized to it.
        self.input_side = max_image_side
        self._key = api_key
        self._client = _client(self.endpoint, api_key, timeout=timeout, connections=self.max_concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="caption-server")
        self._fatal = threading.Event()
        #: Ask for token log-probabilities until the server refuses the parameter once.
        self.ask_logprobs = True
        self._identity = {
            "backend": "openai",
            "family": "openai",
            "endpoint": endpoint_host(self.endpoint),
            "model": model,
            "adapter": None,
            "revision": None,
            "optimizations": [],
        }

    def __repr__(self) -> str:  # never the key
        return f"ServerCaptioner({self.endpoint!r}, {self.model!r}, max_concurrency={self.max_concurrency})"

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    @property
    def device(self) -> str:  # type: ignore[override]
        # Not a torch device: the engine only prints it and picks decode-ahead threads
        # for anything that is not the CPU, which suits waiting on a server.
        return "server"

    @property
    def dtype(self) -> None:  # type: ignore[override]
        return None

    def preprocess(self, images: Sequence[Image.Image], settings: GenerationSettings) -> ServerBatch:
        """Each image shrunk to ``max_image_side`` and JPEG-encoded as a ``data:`` URL."""
        from PIL import Image as PILImage

        urls = []
        for image in images:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if max(rgb.size) > self.max_image_side:
                rgb = rgb.copy()  # thumbnail works in place; the caller's image stays as it was
                rgb.thumbnail((self.max_image_side, self.max_image_side), PILImage.Resampling.LANCZOS)
            buffer = io.BytesIO()
            rgb.save(buffer, "JPEG", quality=self.jpeg_quality)
            urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
        return ServerBatch(urls, settings.prompt or DEFAULT_SERVER_PROMPT)

    def request_body(self, url: str, prompt: str, settings: GenerationSettings) -> dict[str, Any]:
        """The chat-completions request for one image.

        ``temperature`` 0 matches the local models' greedy decoding; beams, minimum
        length and repetition penalty have no portable chat-completions equivalent.
        ``logprobs`` asks for the tokens' log-probabilities (the confidence score) while
        the server has not refused it.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }],
            "max_tokens": settings.max_new_tokens,
            "temperature": 0,
            "stream": False,
        }
        if self.ask_logprobs:
            body["logprobs"] = True
        return body

    def generate(self, batch: ServerBatch, settings: GenerationSettings) -> list[CaptionResult | BaseException]:  # type: ignore[override]
        """One result per image: a :class:`CaptionResult`, or the exception that image's
        request ended with (the engine records it as that image's error).

        Raises :class:`ModelLoadError` (kind ``"server"``) when the server is
        unreachable or refuses the key: the whole job stops before this batch is written.
        """
        if batch.prompt != (settings.prompt or DEFAULT_SERVER_PROMPT):
            raise GenerationError("the batch was prepared with a different prompt")
        self._fatal.clear()
        futures = [self._pool.submit(self._caption_one, url, batch.prompt, settings) for url in batch.urls]
        results: list[CaptionResult | BaseException] = []
        fatal: ModelLoadError | None = None
        for future in futures:
            try:
                results.append(future.result())
            except ModelLoadError as exc:
                fatal = fatal or exc
            except Exception as exc:  # noqa: BLE001 - one image's failure is that image's error
                results.append(exc)
        if fatal is not None:
            raise fatal
        return results

    def _caption_one(self, url: str, prompt: str, settings: GenerationSettings) -> CaptionResult:
        import httpx2

        body = self.request_body(url, prompt, settings)
        chat_url = f"{self.endpoint}/chat/completions"
        attempt = 0
        while True:
            if self._fatal.is_set():
                raise GenerationError("skipped: the server failed")
            wait: float | None = None
            try:
                response = _bounded_request(self._client, "POST", chat_url, json=body, seconds=self.timeout,
                                            max_bytes=self.max_answer_bytes)
            except AnswerTooLarge as exc:
                raise ServerRequestError(str(exc)) from None
            except httpx2.TimeoutException as exc:
                if self._began_answering():
                    # It answers, but too slowly to finish in time: another try would too.
                    raise ServerRequestError(
                        f"the server's answer did not finish within {self.timeout:g} s (--server-timeout)") from None
                problem: str = f"no answer within {self.timeout:g} s ({type(exc).__name__})"
            except httpx2.TransportError as exc:
                # Refused/reset connections: retried like a 503 (a server restarting),
                # then the job stops with one error instead of failing every image.
                if attempt >= self.max_retries:
                    self._fatal.set()
                    raise _unreachable(self.endpoint, exc) from None
                problem = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                if response.status_code in (401, 403):
                    self._fatal.set()
                    raise _refused(self.endpoint, response, self._key)
                if response.status_code == 400 and body.get("logprobs") and _refuses_parameter(response):
                    # A server without log-probabilities: this image again without them
                    # (not a retry), and no later request asks.  Its captions have no score.
                    if self.ask_logprobs:
                        self.ask_logprobs = False
                        log.info("the server does not take 'logprobs' (%s); captions get no confidence score",
                                 _error_message(response, self._key))
                    body = self.request_body(url, prompt, settings)
                    continue
                if response.status_code == 404:
                    # No such model (Ollama: "model not found, try pulling it first") or no
                    # chat-completions route: the same for every image, so it stops the job.
                    self._fatal.set()
                    raise ModelLoadError(
                        f"The server at {self.endpoint} has no model '{self.model}' or no chat-completions API "
                        f"(HTTP 404: {_error_message(response, self._key)}). Pick one of the models the server "
                        "lists, or check --endpoint.", kind="server", model=self.model)
                problem = f"HTTP {response.status_code}: {_error_message(response, self._key)}"
                if response.status_code not in _RETRY_STATUS:
                    raise ServerRequestError(f"the server rejected the image ({problem})")
                wait = _retry_after(response)
            if attempt >= self.max_retries:
                raise ServerRequestError(f"the server failed {attempt + 1} times; last: {problem}")
            if wait is None:
                # Exponential back-off with jitter, so concurrent retries do not arrive together.
                wait = self.backoff * (2 ** attempt) * (0.5 + random.random())  # noqa: S311 - not crypto
            log.info("server request failed (%s); retry %d/%d in %.1f s", problem, attempt + 1, self.max_retries, wait)
            time.sleep(wait)
            attempt += 1

    @staticmethod
    def _began_answering() -> bool:
        """Whether the server had sent part of its answer to this thread's last request."""
        return bool(getattr(_CURRENT, "last_received", 0))

    def _parse(self, response: httpx2.Response) -> CaptionResult:
        """``choices[0].message.content`` of a chat completion; the score from the
        returned token log-probabilities when the server sent any (else ``None``)."""
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError):
            raise ServerRequestError(
                f"the server's answer is not valid JSON: {_shown(response.text, self._key, 80)!r}") from None
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ServerRequestError(
                f"the server's answer has no choices[0].message.content: {_shown(str(body), self._key, 120)}"
            ) from None
        if isinstance(content, list):  # content parts
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise ServerRequestError(f"the server's caption is not text: {_shown(repr(content), self._key, 120)}")
        if _holds_key(content, self._key):
            # Never a caption: it would be stored, exported and shown.
            raise ServerRequestError("the server's answer contains the API key; not stored")
        values = _token_logprobs(choice.get("logprobs"))
        # The mean, as a local model's score (confidence.STORED_KIND); the tokens give the
        # provenance's least-likely-token score too.  None: the server sent none.
        score = sum(values) / len(values) if values else None
        return CaptionResult(content.strip(), score, token_logprobs=tuple(values))  # type: ignore[arg-type]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()


def load_server_captioner(
    endpoint: str,
    model: str,
    *,
    max_concurrency: int = 4,
    api_key: str | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> ServerCaptioner:
    """A :class:`ServerCaptioner`, after checking that the server answers.

    A dead server fails here, with one clear :class:`ModelLoadError`, before the job
    touches anything.  A model the server does not list is only logged: some servers
    (llama-server) serve whatever they were started with under any name.  *endpoint* is
    a :class:`~core.captioning.settings.CaptionJobSpec`'s, normalized when the spec was made.
    """
    report = progress or (lambda _msg: None)
    key = api_key if api_key is not None else resolve_api_key(endpoint)
    report(f"Connecting to {endpoint}")
    try:
        names = _server_models(endpoint, api_key=key, timeout=float(options.get("timeout", MAX_CHECK_SECONDS)))
    except ModelLoadError as exc:
        if "did not list" not in str(exc):
            raise
        names = []
    if names and model not in names and f"{model}:latest" not in names:
        log.warning("model %r is not among the server's models %s", model, names[:20])
    report(f"Captioning with {model} on {endpoint_host(endpoint)}")
    return ServerCaptioner(endpoint, model, api_key=key, max_concurrency=max_concurrency, **options)
