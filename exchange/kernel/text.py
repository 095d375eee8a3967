"""Text: source text that is not valid UTF-8, carried to validation instead of failing the
read; and the words of messages (``a_or_an``: "an integer", "a table"; ``plural``: "1 row").

A provider's SQLite file may hold TEXT that is not UTF-8 (bytes written by a legacy
application: GBK, Latin-1, a truncated sequence) or a lone surrogate encoded as three bytes
(``ED A0 80``, what a UTF-16 string cut in half becomes). The driver cannot decode such a
value; the read used to die with a traceback naming no row. Instead, a connector decodes it
with ``decode_marked``: every byte sequence that is not UTF-8 becomes a mark, and
validation's ``text`` rule quarantines the row with its field and key (``quality.rules.Text``),
so the rest of the run is delivered and the provider gets a ticket naming the row.

Each mark is a NUL followed by a Unicode *noncharacter* (code points the standard reserves
for a program's internal use): NUL U+FDD0 for a byte that does not decode, NUL U+FDD1 for an
encoded surrogate. A NUL is refused in every value anyway (PostgreSQL text cannot hold one),
so a mark can never be confused with a value that would have been delivered, and the text
rule finds all three with one scan of the batch's bytes for a zero byte.
"""

from __future__ import annotations

import codecs
import re

INVALID_UTF8_MARK = "\x00\ufdd0"  # one byte that does not decode
LONE_SURROGATE_MARK = "\x00\ufdd1"  # an encoded surrogate, U+D800..U+DFFF (ED A0..BF 80..BF)

ERRORS = "exchange.mark"  # the codec error handler's name
_SURROGATE = re.compile(rb"\xed[\xa0-\xbf][\x80-\xbf]")


def _mark(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    if _SURROGATE.match(exc.object, exc.start):
        return LONE_SURROGATE_MARK, exc.start + 3
    return INVALID_UTF8_MARK, exc.end


codecs.register_error(ERRORS, _mark)


def decode_marked(data: bytes) -> str:
    """``data`` as UTF-8, with a mark for each sequence that is not UTF-8 (never raises)."""
    return data.decode("utf-8", ERRORS)


# Words that start with a vowel letter but a consonant sound ("a unique key", "a user").
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "eu", "one", "once")


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article, for messages built from a kind or type name:
    ``an integer``, ``an urgent``, ``a table``, ``a unique``."""
    word = noun.lower()
    vowel = word[:1] in ("a", "e", "i", "o", "u") and not word.startswith(_CONSONANT_SOUND)
    return f"{'an' if vowel else 'a'} {noun}"


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``n`` and ``noun``, counted: ``1 row``, ``2 rows``, ``1,000 rows`` (``many``: an
    irregular plural)."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"
