"""The model-server backend's HTTP side: the API key, the client, bounded requests and
scrubbed errors.

Every request to a server has a wall-clock deadline however slowly the server trickles
its answer, and a size bound; the API key (``$CAPTIONDESK_API_KEY``, ``$OPENAI_API_KEY``
or the OS keyring) lives only in the client's headers, and any server text is scrubbed of
it before it is shown.  :mod:`core.captioning.server` (the captioner) is built on it.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .endpoints import endpoint_host, normalize_endpoint
from .errors import ModelLoadError

if TYPE_CHECKING:
    import httpx2


log = logging.getLogger(__name__)

#: Environment variables searched for the API key, in this order.
API_KEY_VARIABLES = ("CAPTIONDESK_API_KEY", "OPENAI_API_KEY")
#: OS keyring service name (the user name is the endpoint's host).
KEYRING_SERVICE = "captiondesk"
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


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(value)))
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to back-off
