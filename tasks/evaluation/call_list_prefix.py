"""Whether a prompt-mode answer still being written can yet decode as a call list (so its generation can stop).

A model scored in BFCL's prompt mode that starts its answer in prose ("To find the area, we ...") is wrong whatever
it writes next: :func:`tasks.evaluation.bfcl_checker.decode_answer` strips backticks, newlines and spaces at both ends,
wraps the text in ``[...]`` and parses it as one Python expression, and no continuation of ``To find`` parses. A
135M base model writes hundreds of tokens of prose per item, so most of an evaluation's time was spent decoding
answers whose verdict was already settled. :func:`dead_end` says when that is so; the evaluation streams the answer
and stops it there (:class:`CallListPrefixRule`), and the verdict of the shortened answer is the verdict of the whole
one.

**Soundness.** :func:`dead_end` returns a reason only when *no* text ``rest`` makes ``text + rest`` decode (the empty
``rest`` included, so the shortened answer does not decode either, and gets the same verdict: a decoding failure, or
for the (ir)relevance categories "no call"). It is deliberately lenient: it judges only what Python's grammar rules
out everywhere in an expression, and anything it does not model (an f-string or t-string, a number with letters in
it, a keyword) stops the judging rather than risking a wrong call. What it rules out, on the text as the decoder
will see it (its leading ``[`` added, the trailing run of backticks, newlines and spaces not yet counted, since the
decoder may strip it):

- two operands in a row with no operator between (a name, number or string after a name, number, string or closing
  bracket; two strings in a row are one string): ``To find``, ``I'm`` (a name, then a string);
- a closing bracket with nothing open or the wrong one open;
- a single-quoted string still open at a line's end (only a triple-quoted string spans lines);
- a keyword only statements have (``def``, ``return``, ``import``, ...);
- a character no Python expression has outside strings and comments (a backtick, ``$``, ``?``, ``;``, a
  non-ASCII character that is not part of a name, a backslash not at a line's end);
- anything but comments after the expression's line has ended (a newline with no bracket open).

Every answer of a tuned model that decodes is never cut: the test suite checks every prefix of the calls written for
BFCL's possible answers, and random texts against :func:`decode_answer` itself.
"""

from __future__ import annotations

import keyword
import unicodedata
from dataclasses import dataclass

RULE_NAME = "bfcl_call_list_prefix_v1"

STRIPPED = "`\n "  # what decode_answer strips at both ends
_OPENING = {"(": ")", "[": "]", "{": "}"}
_CLOSING = frozenset(")]}")
_KEYWORDS = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)
# keywords of statements only, never part of an expression (``from`` is left out: ``(yield from x)``)
_STATEMENT_KEYWORDS = frozenset({"def", "class", "return", "import", "while", "with", "try", "except", "raise", "pass",
                                 "del", "global", "nonlocal", "assert", "break", "continue", "finally", "elif"})
_QUOTES = frozenset("'\"")
_NEVER_OUTSIDE_STRINGS = frozenset("`$?;")
_STRING_PREFIXES = frozenset({"r", "u", "b", "br", "rb", "f", "fr", "rf", "t", "tr", "rt"})
_UNMODELLED_PREFIX_LETTERS = frozenset("ft")  # f-strings (nested quotes since Python 3.12) and t-strings

# token kinds
NAME, NUMBER, STRING, CLOSE, OTHER = "name", "number", "string", "close", "other"
_OPERAND_END = frozenset({NAME, NUMBER, STRING, CLOSE})
_OPERAND_START = frozenset({NAME, NUMBER, STRING})


class _Undecided(Exception):
    """The scan met something it does not model: no verdict on this text (nor on any continuation of it)."""


class _Dead(Exception):
    """No continuation of the text decodes; the message says why."""


@dataclass
class _Token:
    kind: str
    text: str


def dead_end(text: str) -> str | None:
    """Why no continuation of ``text`` (a prompt-mode answer so far) can decode as a call list, or None while one
    still could (or this function cannot tell)."""
    body = text.lstrip(STRIPPED)
    if not body:
        return None
    if not body.startswith("["):
        body = "[" + body
    try:
        _scan(body.rstrip(STRIPPED))
    except _Dead as dead:
        return str(dead)
    except _Undecided:
        return None
    return None


def _is_name_char(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char == "_"
    # Python reads names NFKC-normalised: a character that becomes a name character counts as one
    return ("a" + char).isidentifier() or unicodedata.normalize("NFKC", "a" + char).isidentifier()


def _scan(source: str) -> None:
    """Tokens of ``source`` checked pair by pair; raises :class:`_Dead` or :class:`_Undecided`, or returns when the
    text so far is a possible beginning. A token that runs to the end of ``source`` may still grow (``i`` ->
    ``if``), so it is judged only once something follows it; a string is judged when it opens."""
    stack: list[str] = []
    previous: _Token | None = None
    line_ended = False  # a newline with no bracket open: the expression is over
    i, end = 0, len(source)
    while i < end:
        char = source[i]
        if char in " \t\f\r":
            i += 1
            continue
        if char == "\n":
            if not stack:
                line_ended = True
            i += 1
            continue
        if char == "\\":
            if i + 1 == end:
                raise _Undecided
            if source[i + 1] == "\n" or source.startswith("\r\n", i + 1):
                i += 2 if source[i + 1] == "\n" else 3
                continue
            raise _Dead(f"a backslash outside a string not at a line's end (character {i})")
        if char == "#":
            newline = source.find("\n", i)
            if newline < 0:
                return
            i = newline
            continue
        if line_ended:
            raise _Dead(f"{source[i:i + 20]!r} after the expression's line ended (character {i})")
        token, i = _next_token(source, i, stack)
        if token is None:  # runs to the end of the text: may still grow
            return
        if previous is not None and previous.kind in _OPERAND_END and token.kind in _OPERAND_START \
                and not (previous.kind == STRING and token.kind == STRING):
            raise _Dead(f"{previous.text[:20]!r} then {token.text[:20]!r} with no operator between")
        previous = token


def _next_token(source: str, i: int, stack: list[str]) -> tuple[_Token | None, int]:
    """The token starting at ``i`` and the index after it; None when it may still grow (it reaches the end)."""
    char, end = source[i], len(source)
    if char in _QUOTES:
        return _string_token(source, i, i)
    if _is_name_char(char) and not char.isdigit():
        j = i
        while j < end and _is_name_char(source[j]):
            j += 1
        word = source[i:j]
        if j < end and source[j] in _QUOTES and word.lower() in _STRING_PREFIXES:  # a prefixed string
            if _UNMODELLED_PREFIX_LETTERS & set(word.lower()):
                raise _Undecided
            return _string_token(source, i, j)
        if j == end:
            return None, j
        if word in _STATEMENT_KEYWORDS:
            raise _Dead(f"the statement keyword {word!r} (character {i}): an answer is one expression")
        return _Token(OTHER if word in _KEYWORDS else NAME, word), j
    if char.isdigit() or (char == "." and i + 1 < end and source[i + 1].isdigit()):
        j = i
        hexadecimal = source.startswith(("0x", "0X"), i)
        while j < end and (_is_name_char(source[j]) or source[j] == "."
                           or (source[j] in "+-" and source[j - 1] in "eE" and not hexadecimal)):
            j += 1
        if j == end:
            return None, j
        number = source[i:j]
        # digits (and a point) only: a letter may be an exponent, a base, or a keyword run on (``1if``)
        plain = number.replace(".", "").replace("_", "").isdigit()
        return _Token(NUMBER if plain else OTHER, number), j
    if char in _OPENING:
        stack.append(_OPENING[char])
        return _Token(OTHER, char), i + 1
    if char in _CLOSING:
        if not stack:
            raise _Dead(f"{char!r} closes a bracket that is not open (character {i})")
        expected = stack.pop()
        if char != expected:
            raise _Dead(f"{char!r} where {expected!r} closes the open bracket (character {i})")
        return _Token(CLOSE, char), i + 1
    if char in _NEVER_OUTSIDE_STRINGS:
        raise _Dead(f"{char!r} outside a string (character {i})")
    if not char.isascii():
        raise _Dead(f"{char!r} (U+{ord(char):04X}) outside a string (character {i})")
    return _Token(OTHER, char), i + 1


def _string_token(source: str, start: int, quote_at: int) -> tuple[_Token, int]:
    """A string token (judged when it opens, so never None) and the index after it (the text's end while it is still
    open); a single-quoted one open at a line's end is :class:`_Dead`."""
    after = _string_end(source, quote_at)
    after = len(source) if after is None else after
    return _Token(STRING, source[start:after]), after


def _string_end(source: str, i: int) -> int | None:
    """The index after the string whose quote is at ``i``, or None when it is still open at the end. A backslash
    escapes the next character (in raw strings too, as far as where the string ends goes)."""
    quote = source[i]
    triple = source.startswith(quote * 3, i)
    delimiter = quote * 3 if triple else quote
    j, end = i + len(delimiter), len(source)
    while j < end:
        char = source[j]
        if char == "\\":
            j += 2
            continue
        if source.startswith(delimiter, j):
            return j + len(delimiter)
        if char == "\n" and not triple:
            raise _Dead(f"a string opened at character {i} is still open at the end of its line")
        j += 1
    return None


@dataclass(frozen=True)
class CallListPrefixRule:
    """The stop rule an evaluation streams a prompt-mode answer under (see :class:`toolace.llm.gateway.StopRule`):
    ``rule(text)`` is :func:`dead_end`. ``name`` is versioned: it is part of the response cache's key and of each
    shortened answer's record."""

    name: str = RULE_NAME

    def __call__(self, text: str) -> str | None:
        return dead_end(text)
