"""Scrubbing the credential and the header values sent out of what an upstream answers.

An upstream that refuses a request (a 4xx) often echoes what it got, and rarely as it was
sent: a JSON encoder escapes ``/`` as ``\\/`` (PHP) or every character as ``\\uXXXX``
(some Java ones), a redirect target percent-encodes it, a debug field base64-encodes it.
A ``Scrubber`` knows the values of one request and replaces each of them, in any of those
forms (and in mixtures of them: ``ab\\/cd%2Bef``), with ``***``.

A JSON body stays JSON: it is decoded, its strings (keys and values) and numbers are
scrubbed, and it is encoded again only if something was replaced (an untouched body goes
back byte for byte). A body that is not JSON is scrubbed as text. Only the known values are
replaced: no ``key=value`` guessing, which would break a JSON error saying ``"token: ..."``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable

#: Replaces every form of a value.
MASK = "***"
#: A base64 run shorter than this is not replaced on its own (too likely to occur by chance).
_MIN_B64 = 8
_UTF8_BOM = "\ufeff"
#: JSON's two-character escapes (RFC 8259 §7), ``\/`` included: PHP writes it for every ``/``.
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
_JSON_SHORT |= {"\r": "\\r", "\t": "\\t"}
_HTML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}


def _hex(n: int, width: int) -> str:
    """``n`` in hex, each digit matching either case."""
    digits = f"{n:0{width}x}"
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)


def _char(c: str) -> str:
    """A regex matching one character of a value as it is or in any encoding it may be given."""
    code = ord(c)
    forms = [re.escape(c)]
    if code > 0xFFFF:  # JSON writes it as a surrogate pair
        hi, lo = divmod(code - 0x10000, 0x400)
        forms.append(rf"\\u{_hex(0xD800 + hi, 4)}\\u{_hex(0xDC00 + lo, 4)}")
    else:
        forms.append(rf"\\u{_hex(code, 4)}")
    if c in _JSON_SHORT:
        forms.append(re.escape(_JSON_SHORT[c]))
    forms.append("".join(f"%{_hex(b, 2)}" for b in c.encode("utf-8", "surrogatepass")))
    if c == " ":
        forms.append(r"\+")  # application/x-www-form-urlencoded
    forms.append(f"&#0*{code};")
    forms.append(f"&#[xX]0*{_hex(code, 1)};")
    if c in _HTML_NAMED:
        forms.append(re.escape(_HTML_NAMED[c]))
    return "(?:" + "|".join(forms) + ")"


def _base64_forms(value: str) -> set[str]:
    """The base64 runs that appear wherever ``value`` is base64-encoded, alone or inside a
    longer string (at each of the three byte alignments), in both alphabets."""
    raw = value.encode("utf-8", "surrogatepass")
    found: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        found |= {whole, whole.rstrip("=")}
        for shift in range(3):
            text = encode(b"\0" * shift + raw).decode("ascii")
            # The characters whose six bits all come from ``value``'s bytes.
            first, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
            if end - first >= _MIN_B64:
                found.add(text[first:end])
    return {f for f in found if len(f) >= min(_MIN_B64, len(value))}


class Scrubber:
    """Replaces the given values (a credential, the header values of one request) in text
    and in bodies, in every form listed in the module's docstring."""

    def __init__(self, values: Iterable[str | None]):
        kept = sorted({v for v in values if v}, key=len, reverse=True)
        alternatives = ["".join(_char(c) for c in v) for v in kept]
        b64 = {f for v in kept for f in _base64_forms(v)}
        # Longest first at each position: "Key <token>" goes whole, not as "Key ***".
        alternatives += [re.escape(f) for f in sorted(b64, key=len, reverse=True)]
        # Every match starts with one of these: the lookahead lets the engine skip the other
        # positions of a long body at the cost of one class test (about three times faster).
        firsts = "".join(sorted({v[0] for v in kept} | {f[0] for f in b64} | set("\\%&+")))
        lead = f"(?=[{re.escape(firsts)}])"
        self._pattern = (
            re.compile(lead + "(?:" + "|".join(alternatives) + ")") if alternatives else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        """``text`` with every form of every value replaced by ``***``."""
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def found_in(self, text: str) -> bool:
        """Whether any form of any value is in ``text``."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def body(self, data: bytes, content_type: str | None = None) -> bytes:
        """``data`` scrubbed: a JSON document stays a valid JSON document, anything else is
        scrubbed as text (bytes that are not UTF-8 are kept as they are around the values)."""
        if self._pattern is None:
            return data
        text = data.decode("utf-8", "surrogateescape")
        if "\\" not in text and not self.found_in(text):
            # Without an escape, JSON strings are substrings of the body as it is: nothing
            # to replace anywhere (the common case, and a fast one for a large body).
            return data
        parsed = self._json(text, content_type)
        if parsed is not None:
            doc, changed = parsed
            out = json.dumps(doc, ensure_ascii=False) if changed else text
            if not self.found_in(out):
                return out.encode("utf-8", "surrogateescape") if changed else data
            # A value straddling the document's structure (a quote inside the credential):
            # safety before validity.
            text = out
        return self.text(text).encode("utf-8", "surrogateescape")

    def _json(self, text: str, content_type: str | None) -> tuple[object, bool] | None:
        """The scrubbed document and whether anything changed, or None when ``text`` is not
        a JSON document (nor declared as one)."""
        bare = text.removeprefix(_UTF8_BOM)
        declared = content_type is not None and "json" in content_type.lower()
        if not declared and bare.lstrip()[:1] not in ("{", "["):
            return None
        try:
            doc = json.loads(bare, parse_constant=_refuse_constant)
            scrubbed = self._value(doc)
        except (ValueError, RecursionError):  # not JSON, NaN/Infinity, nested past our stack
            return None
        return scrubbed, scrubbed != doc

    def _value(self, value: object) -> object:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self._value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v) for v in value]
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            # A number that spells a value (an echoed timestamp) becomes the scrubbed string.
            shown = json.dumps(value)
            scrubbed = self.text(shown)
            return scrubbed if scrubbed != shown else value
        return value


def _refuse_constant(name: str) -> object:
    # NaN and Infinity are not JSON (RFC 8259): such a body is scrubbed as text.
    raise ValueError(f"{name} is not JSON")
