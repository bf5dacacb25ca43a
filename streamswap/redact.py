"""Secrets out of every URI we show: status, metrics labels, logs, error messages.

One function (`redact_uri`) decides what is secret in an address; `redact_text` applies it
to each URI inside free text (an FFmpeg error, a log line). Everything that displays an
address goes through one of them, and the log formatter passes whole lines through
`redact_text` as a last net.

Secret parts: the password of `user:pass@` (a bare `token@` entirely), the stream key of
RTMP-family URLs (every path segment after the application name: `rtmp://host/app/KEY`),
and query values whose names mean credentials (`key`, `token`, `passphrase`, `streamid`,
`sig`, ...).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

MASK = "***"

# Schemes whose path after the application name is a stream key (RTMP and its
# tunnelled/encrypted variants).
_KEY_IN_PATH = {"rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpte", "rtmpts"}
# Query parameter names (lower case; also matched as a suffix after _ or -) that carry a
# credential: SRT's passphrase and streamid, signed-URL signatures, API keys, tokens.
_SECRET_PARAMS = (
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "streamid",
    "auth",
    "authorization",
    "sig",
    "signature",
    "credential",
    "credentials",
    "apikey",
    "api_key",
    "access_token",
    "x-amz-signature",
    "x-amz-credential",
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>`]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


def _secret_param(name: str) -> bool:
    name = name.lower()
    return name in _SECRET_PARAMS or any(name.endswith(("_" + p, "-" + p)) for p in _SECRET_PARAMS)


def _redact_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        parts.append(f"{name}={MASK}" if eq and _secret_param(name) else item)
    return "&".join(parts)


def redact_uri(uri: str) -> str:
    """`uri` with its credentials replaced by `***`; text that is not a URI comes back as is.

    >>> redact_uri("rtmp://user:pw@live.example/app/abcd-1234?x=1")
    'rtmp://user:***@live.example/app/***?x=1'
    """
    if not isinstance(uri, str):
        return uri
    m = _SCHEME.match(uri)
    if m is None:
        return uri
    scheme, rest = m.group(1), m.group(2)
    # Only web URLs have fragments; SRT's streamid starts with "#!::" and is part of the query.
    rest, hash_sign, fragment = rest.partition("#") if scheme.lower() in ("http", "https") else (rest, "", "")
    rest, qmark, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        authority = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    if scheme.lower() in _KEY_IN_PATH and slash:
        app, sep, key = path.partition("/")
        if sep and key:
            path = f"{app}/{MASK}"
    query = _redact_query(query)
    if fragment and any(_secret_param(k) for k, _ in parse_qsl(fragment, keep_blank_values=True)):
        fragment = _redact_query(fragment)
    return f"{scheme}://{authority}{slash}{path}{qmark}{query}{hash_sign}{fragment}"


def redact_text(text: str) -> str:
    """Every URI inside `text` passed through `redact_uri` (log lines, error messages)."""
    if "://" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        uri = m.group(0)
        core = uri.rstrip(":,.;)]}")  # "rtmp://h/app/key: refused" keeps its colon
        return redact_uri(core) + uri[len(core) :]

    return _URI.sub(one, text)
