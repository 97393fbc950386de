"""A scriptable OpenAI-compatible chat-completions server for the server-backend tests.

Run as a separate process (``python tests/support/fake_openai_server.py``); it binds
127.0.0.1 on a free port and prints ``PORT <n>`` on its first stdout line.  It
implements the parts of the OpenAI API shape CaptionDesk uses:

* ``POST /v1/chat/completions`` (non-streaming): the request must carry a model and one
  user message with a ``text`` part and an ``image_url`` part holding a
  ``data:image/jpeg;base64,...`` URL.  The image is really decoded; the caption
  describes it ("a 640x480 red photo"), so a test can tell the images apart and see
  what size was uploaded; a prompt asking for keywords gets a keyword list.  Answers ``{"id", "object": "chat.completion", "created",
  "model", "choices": [{"index", "message": {"role", "content"}, "finish_reason"}],
  "usage"}``; errors are ``{"error": {"message", "type", "code"}}``.
* A request whose messages are all plain text (a system turn with the style, a user turn
  with a caption: the restyle stage) gets the user's text capitalised with a full stop;
  a text naming a colour in ``fail_colors`` gets a malformed answer.
* ``GET /v1/models`` (``{"object": "list", "data": [{"id", "object": "model", ...}]}``)
  and Ollama's ``GET /api/tags`` (``{"models": [{"name", ...}]}``).

Behaviour is scripted over HTTP, by the test process:

* ``POST /_control`` with JSON ``{"queue": [...], "delay": s, "models": [...],
  "openai_models": bool, "strict_models": bool, "api_key": str|null, "fail_colors": [...]}`` (all optional):
  ``queue`` holds the behaviours of the next chat requests, in arrival order; each is
  ``"ok"``, ``"429"`` (with ``Retry-After: 1``), ``"429-noheader"``, ``"500"``,
  ``"503"``, ``"slow"`` (sleeps 3 s before answering), ``"malformed"`` (HTTP 200 with
  a body that is not JSON) or ``"400"``.  After the queue, requests are ``"ok"``,
  each after ``delay`` seconds.  Images whose colour is named in ``fail_colors`` always
  get a malformed answer (a per-image failure that retries do not fix).  With
  ``strict_models``, a model not in ``models`` gets 404.  With
  ``api_key`` set, a request without ``Authorization: Bearer <key>`` gets 401.
  ``"logprobs"`` says what a request with ``"logprobs": true`` gets: ``"answer"`` (the
  default, as vLLM and llama-server do) the caption's tokens with log-probabilities
  (:data:`TOKEN_LOGPROB`, one value per colour, so a test can compute the mean);
  ``"reject"`` HTTP 400 "Unrecognized request argument supplied: logprobs" (a server
  without them); ``"ignore"`` an answer without them.
  Hostile behaviours (queue entries): ``"echo-exact"``, ``"echo-lower"``,
  ``"echo-prefix"`` (HTTP 400 whose error message holds the request's bearer token as
  sent, lower-cased, or its first half), ``"echo-json"`` (HTTP 400 whose body holds
  the token with every character JSON-escaped, not an OpenAI error object),
  ``"echo-200"`` (a caption that holds the token), ``"drip"`` (the whole answer, status
  line included, one byte every 0.5 s), ``"huge"`` (HTTP 200 without Content-Length,
  ``huge_bytes`` of caption), ``"long"`` (a caption of ``long_chars`` characters).
  ``"models_mode"``: ``"drip"`` or ``"huge"`` (``huge_bytes`` of model list, no
  Content-Length) for ``GET /v1/models`` and ``/api/tags``.
* ``GET /_control`` returns counters: ``chat_requests``, ``max_in_flight``,
  ``uploaded_sizes`` (``[w, h]`` per decoded image), ``formats``, ``authorized``
  (requests whose bearer token matched), ``prompts``, ``behaviours``, ``logprobs_asked``
  (per chat request, whether it asked for log-probabilities), ``bytes_sent`` (of
  the hostile answers, as far as the client took them).  The request log
  on stderr has method and path only.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

_COLORS = {"red": (200, 40, 40), "green": (20, 200, 20), "blue": (30, 30, 220), "gray": (128, 128, 128)}
#: Each caption token's log-probability, by the photo's colour; the last token (the
#: colour word) is half as likely again, so the mean and the minimum differ.
TOKEN_LOGPROB = {"red": -0.1, "green": -0.2, "blue": -0.4, "gray": -0.8}


def _color_name(image: Image.Image) -> str:
    # The bottom-right quarter is the plain colour (tests/imagegen.write_jpeg).
    w, h = image.size
    pixel = image.convert("RGB").crop((w * 3 // 4, h * 3 // 4, w, h)).resize((1, 1)).getpixel((0, 0))
    return min(_COLORS, key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLORS[name], pixel, strict=True)))


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[str] = []
        self.delay = 0.0
        self.models = ["llava:latest", "qwen2.5vl:7b"]
        self.openai_models = True
        self.strict_models = False
        self.api_key: str | None = None
        self.fail_colors: list[str] = []
        self.logprobs = "answer"
        self.models_mode = "ok"
        self.huge_bytes = 40 * 1024 * 1024
        self.long_chars = 5000
        self.in_flight = 0
        self.counters: dict[str, Any] = {
            "chat_requests": 0, "max_in_flight": 0, "uploaded_sizes": [], "formats": [], "authorized": 0,
            "prompts": [], "behaviours": [], "logprobs_asked": [], "bytes_sent": 0,
        }


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        sys.stderr.write(f"{self.command} {self.path}\n")

    # -- helpers
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drip(self, body: Any) -> None:
        """The whole answer, status line and headers included, one byte every half second."""
        data = json.dumps(body).encode()
        raw = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
               .encode() + data)
        self.close_connection = True
        try:
            for i in range(len(raw)):
                self.wfile.write(raw[i:i + 1])
                self.wfile.flush()
                with STATE.lock:
                    STATE.counters["bytes_sent"] += 1
                time.sleep(0.5)
        except OSError:
            pass  # the client gave up

    def _stream(self, head: bytes, filler: bytes, tail: bytes, size: int) -> None:
        """HTTP 200 without Content-Length: *head*, *filler* up to *size* bytes, *tail*."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        chunk = filler * (65536 // len(filler))
        try:
            self.wfile.write(head)
            sent = 0
            while sent < size:
                self.wfile.write(chunk)
                sent += len(chunk)
                with STATE.lock:
                    STATE.counters["bytes_sent"] += len(chunk)
            self.wfile.write(tail)
        except OSError:
            pass  # the client stopped reading

    def _error(self, status: int, message: str, kind: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": kind, "code": code}}, headers)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    # -- routes
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/_control":
            with STATE.lock:
                self._send(200, STATE.counters)
        elif self.path in ("/v1/models", "/api/tags") and STATE.models_mode == "drip":
            self._drip({"object": "list", "data": [{"id": name} for name in STATE.models]})
        elif self.path in ("/v1/models", "/api/tags") and STATE.models_mode == "huge":
            self._stream(b'{"object": "list", "data": [', b'{"id": "model-xxxxxxxxxxxxxxxxxxxxxxxx"}, ',
                         b'{"id": "last"}]}', STATE.huge_bytes)
        elif self.path == "/v1/models" and STATE.openai_models:
            self._send(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "library"} for name in STATE.models]})
        elif self.path == "/api/tags":
            self._send(200, {"models": [{"name": name, "model": name, "size": 1} for name in STATE.models]})
        else:
            self._error(404, f"no route {self.path}", "invalid_request_error")

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/_control":
            script = self._body()
            with STATE.lock:
                STATE.queue = list(script.get("queue", STATE.queue))
                STATE.delay = float(script.get("delay", STATE.delay))
                STATE.models = list(script.get("models", STATE.models))
                STATE.openai_models = bool(script.get("openai_models", STATE.openai_models))
                STATE.api_key = script.get("api_key", STATE.api_key)
                STATE.fail_colors = list(script.get("fail_colors", STATE.fail_colors))
                STATE.strict_models = bool(script.get("strict_models", STATE.strict_models))
                STATE.logprobs = str(script.get("logprobs", STATE.logprobs))
                STATE.models_mode = str(script.get("models_mode", STATE.models_mode))
                STATE.huge_bytes = int(script.get("huge_bytes", STATE.huge_bytes))
                STATE.long_chars = int(script.get("long_chars", STATE.long_chars))
            self._send(200, {"ok": True})
            return
        if self.path != "/v1/chat/completions":
            self._error(404, f"no route {self.path}", "invalid_request_error")
            return
        with STATE.lock:
            STATE.in_flight += 1
            STATE.counters["chat_requests"] += 1
            STATE.counters["max_in_flight"] = max(STATE.counters["max_in_flight"], STATE.in_flight)
            behaviour = STATE.queue.pop(0) if STATE.queue else "ok"
            STATE.counters["behaviours"].append(behaviour)
        try:
            self._chat(behaviour)
        finally:
            with STATE.lock:
                STATE.in_flight -= 1

    def _chat(self, behaviour: str) -> None:
        body = self._body()
        auth = self.headers.get("Authorization")
        if STATE.api_key is not None:
            if auth != f"Bearer {STATE.api_key}":
                self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
                return
            with STATE.lock:
                STATE.counters["authorized"] += 1
        messages = body.get("messages") or []
        if messages and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            self._restyle(body, behaviour)
            return
        try:
            assert body.get("stream") in (False, None), "streaming is not implemented here"
            (message,) = body["messages"]
            parts = {part["type"]: part for part in message["content"]}
            url = parts["image_url"]["image_url"]["url"]
            prefix, data = url.split(",", 1)
            assert prefix == "data:image/jpeg;base64", prefix
            image = Image.open(io.BytesIO(base64.b64decode(data)))
            image.load()
            prompt = parts["text"]["text"]
            model = body["model"]
        except Exception as exc:  # noqa: BLE001 - any malformed request is a 400, as OpenAI does
            self._error(400, f"invalid request: {type(exc).__name__}: {exc}", "invalid_request_error")
            return
        asked = body.get("logprobs") is True
        with STATE.lock:
            STATE.counters["logprobs_asked"].append(asked)
        if asked and STATE.logprobs == "reject":
            # What OpenAI-style servers answer for a parameter they do not know.
            self._error(400, "Unrecognized request argument supplied: logprobs", "invalid_request_error")
            return
        if STATE.strict_models and model not in STATE.models:
            # What Ollama answers for a model it has not pulled.
            self._error(404, f'model "{model}" not found, try pulling it first', "api_error")
            return
        color = _color_name(image)
        with STATE.lock:
            STATE.counters["uploaded_sizes"].append(list(image.size))
            STATE.counters["formats"].append(image.format)
            STATE.counters["prompts"].append(prompt)
        if color in STATE.fail_colors:
            behaviour = "malformed"
        if behaviour == "429":
            self._error(429, "Rate limit reached, retry after 1s", "rate_limit_error", "rate_limit_exceeded",
                        {"Retry-After": "1"})
            return
        if behaviour == "429-noheader":
            self._error(429, "Rate limit reached", "rate_limit_error", "rate_limit_exceeded")
            return
        if behaviour in ("500", "503"):
            self._error(int(behaviour), "The server had an error while processing your request.", "server_error")
            return
        if behaviour == "400":
            self._error(400, "Invalid image.", "invalid_request_error", "invalid_image")
            return
        if behaviour == "malformed":
            self._send(200, None, raw=b'{"choices": [{"message": {"content": "a trunc')
            return
        token = (auth or "").removeprefix("Bearer ")
        echoes = {"echo-exact": token, "echo-lower": token.lower(), "echo-prefix": token[: len(token) // 2]}
        if behaviour in echoes:
            self._error(400, f"Invalid image. Request had Authorization: Bearer {echoes[behaviour]}",
                        "invalid_request_error")
            return
        if behaviour == "echo-json":
            escaped = "".join(f"\\u{ord(c):04x}" for c in f"Bearer {token}")
            self._send(400, None, raw=('{"detail": "bad image", "headers": {"authorization": "' + escaped + '"}}')
                       .encode())
            return
        if behaviour == "huge":
            self._stream(b'{"choices": [{"message": {"role": "assistant", "content": "', b"a",
                         b'"}, "finish_reason": "stop"}]}', STATE.huge_bytes)
            return
        if behaviour == "drip":
            self._drip({"choices": [{"message": {"role": "assistant", "content": "a slow photo"}}]})
            return
        time.sleep(3.0 if behaviour == "slow" else STATE.delay)
        caption = f"a {image.size[0]}x{image.size[1]} {color} photo"
        if "keywords" in prompt.lower():  # a keyword list as chat models write one
            caption = f"Keywords: Photo, {color.upper()}, photo,  colours | {color}."
        if behaviour == "echo-200":
            caption += f" (your key is {token})"
        elif behaviour == "long":
            caption = ("a very long caption " * STATE.long_chars)[: STATE.long_chars]
        logprobs = None
        if asked and STATE.logprobs == "answer":
            words = caption.split()
            values = [TOKEN_LOGPROB[color] * (1.5 if word == color else 1.0) for word in words]
            logprobs = {"content": [{"token": word, "logprob": value, "bytes": list(word.encode()), "top_logprobs": []}
                                    for word, value in zip(words, values, strict=True)]}
        self._send(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"  {caption}\n"},
                         "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })

    def _restyle(self, body: Any, behaviour: str) -> None:
        """A text-only chat request (the restyle stage): the answer is the user's text
        capitalised with a full stop, one log-probability of -0.1 a word."""
        messages = body["messages"]
        style = " ".join(m["content"] for m in messages if m.get("role") == "system")
        text = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        with STATE.lock:
            STATE.counters["prompts"].append(style)
            STATE.counters.setdefault("texts", []).append(text)
        if STATE.strict_models and body.get("model") not in STATE.models:
            self._error(404, "model not found, try pulling it first", "api_error")
            return
        if behaviour == "malformed" or any(color in text.split() for color in STATE.fail_colors):
            self._send(200, None, raw=b'{"choices": [{"message": {"content": "a trunc')
            return
        if behaviour in ("500", "503"):
            self._error(int(behaviour), "The server had an error while processing your request.", "server_error")
            return
        answer = text[:1].upper() + text[1:].rstrip(".") + "."
        logprobs = None
        if body.get("logprobs") is True and STATE.logprobs == "answer":
            logprobs = {"content": [{"token": word, "logprob": -0.1, "bytes": list(word.encode()), "top_logprobs": []}
                                    for word in answer.split()]}
        self._send(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop",
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
