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
import io
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.captions import DEFAULT_MODEL_CAPTION_CHARS

from .captioner import Captioner, CaptionResult
from .endpoints import endpoint_host, normalize_endpoint
from .errors import GenerationError, ModelLoadError
from .server_http import (
    _CURRENT,
    _RETRY_STATUS,
    MAX_CHECK_SECONDS,
    AnswerTooLarge,
    _bounded_request,
    _client,
    _error_message,
    _holds_key,
    _refused,
    _refuses_parameter,
    _retry_after,
    _server_models,
    _shown,
    _unreachable,
    list_server_models,
    resolve_api_key,
)

if TYPE_CHECKING:
    import httpx2
    from PIL import Image

    from .job_spec import GenerationSettings
    from .presets import Preset

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

#: The instruction sent when the settings have no prompt (a chat model needs one).
DEFAULT_SERVER_PROMPT = "Write a one-sentence caption describing this photo. Reply with the caption only."
#: Longest side of an uploaded image.
DEFAULT_MAX_IMAGE_SIDE = 1024


class ServerRequestError(GenerationError):
    """One image's request failed for good (after retries, or a non-retryable answer)."""


class ServerPrompts:
    """How presets and caption kinds reach a chat server: every preset as its instruction
    (the ``family`` of :class:`ServerCaptioner`, for :mod:`core.captioning.prompting`)."""

    id = "openai"
    prompt_style = "instruction"

    def preset_prompt(self, preset: Preset, *, model_type: str | None = None) -> str | None:
        return preset.instruction


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
        #: What prompting asks of it: a chat model follows every preset and kind.
        self.family = ServerPrompts()
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
    a :class:`~core.captioning.job_spec.CaptionJobSpec`'s, normalized when the spec was made.
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
