"""Model-server endpoint URLs: validation and the part provenance may record.

Separate from :mod:`core.captioning.server` (which imports the captioner base and the
HTTP client) so that :class:`core.captioning.job_spec.CaptionJobSpec` can validate an
endpoint without importing either.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["endpoint_host", "normalize_endpoint"]


def _redacted(url: str) -> str:
    """*url* with any ``user:password@``, query string and fragment replaced, for error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        parts = parts._replace(query="***")
    if parts.fragment:
        parts = parts._replace(fragment="***")
    return urlunsplit(parts)


def normalize_endpoint(endpoint: str | None) -> str:
    """The server's base URL, checked: ``http(s)://host[:port]/path`` without a trailing
    slash; a bare ``http://host:port`` gets ``/v1``.  ``ValueError`` names the bad value.

    Credentials in the URL and query strings are refused: the URL is stored in the job
    record and the GUI's settings, where a secret must never end up.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError(f"endpoint must be the server's URL, e.g. http://localhost:11434/v1, got {endpoint!r}")
    text = endpoint.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a non-numeric port
    except ValueError:
        raise ValueError(f"endpoint is not a valid URL: {_redacted(text)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint must start with http:// or https:// and name a host, got {_redacted(text)!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"endpoint must not contain credentials (set CAPTIONDESK_API_KEY instead), got "
                         f"{_redacted(text)!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"endpoint must not have a query string or fragment (a secret there would be stored and "
                         f"shown; set CAPTIONDESK_API_KEY instead), got {_redacted(text)!r}")
    path = parts.path.rstrip("/") or "/v1"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def endpoint_host(endpoint: str) -> str:
    """``host:port`` of *endpoint*: what provenance records (never a path, query or secret)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port is not None else host
