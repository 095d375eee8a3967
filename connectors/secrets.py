"""Keeping credentials out of every message, log line and audit event."""

from __future__ import annotations

import re

from sqlalchemy.engine import URL

_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I
)
_KEYVAL = re.compile(
    r"(?P<key>password|passwd|pwd|secret|token)(?P<q>['\"]?)\s*[=:]\s*"
    r"(?P<val>'[^']*'|\"[^\"]*\"|[^\s,&;}]+)",
    re.I,
)


def redact(text: str, *secrets: str | None) -> str:
    """Remove passwords from ``text``: the given secrets, URL user-info and key=value pairs."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KEYVAL.sub(lambda m: f"{m['key']}{m['q']}=***", text)


def safe_url(url: URL) -> str:
    """The URL as it may be shown: password hidden, in user-info and in query parameters."""
    query = {k: ("***" if _KEYVAL.match(f"{k}=x") else v) for k, v in url.query.items()}
    return url.set(query=query).render_as_string(hide_password=True)
