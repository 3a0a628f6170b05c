"""Untrusted text: the checks at the boundary and the one escape at output.

Text that someone else chose -- item names, tags, comments, access-request
reasons, close reasons, user names -- ends up on terminals and in log files,
where an ESC starts a terminal command, an OSC 8 sequence makes a link, a
newline forges a table row and a bidi override reverses what is shown.  Two
defences, both in this module:

* B{At the boundary} (the Jumpoint's control requests, jumpoint.yaml,
  C{jumpoint user add}): L{name_problem}, L{user_name_problem} and
  L{free_text_problem} say why a value is refused (C{None}: accepted);
  L{free_text} applies a field's rule (refuse, or replace with escapes).
  Names must be printable, without surrounding blanks, and already in NFKC
  form: a name that is not is refused (with its NFKC form as a suggestion)
  rather than silently normalised, so the name stored is the name typed and
  every lookup by name keeps working unchanged.  User names must also be
  written in a single script (L{scripts_of}).
* B{At output} (console tables and messages, the live view, the Jumpoint's
  text log): L{printable} turns every control, format (bidi, zero-width),
  separator, surrogate, private-use and unassigned character into a visible
  escape (C{\\x1b}, C{\\n}, C{\\u202e}); printable characters, backslash
  included, are kept as they are, so printable text is shown unchanged and
  escaping twice changes nothing.  JSON output needs no escape of its own:
  C{json.dumps} (with its default C{ensure_ascii}) writes all of these as
  C{\\uXXXX}.
"""

from __future__ import annotations

import unicodedata

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""What L{printable} escapes: controls (C0, DEL, C1), format characters (bidi
controls, zero-width characters), surrogates, private use, unassigned code
points, and the line and paragraph separators."""

BIDI_CONTROLS = frozenset(
    chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)
)
"""Embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the marks
(LRM, RLM, ALM): they reorder what a terminal shows."""

NAME_MAX = 128

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def is_unsafe(char: str) -> bool:
    """Whether L{printable} escapes C{char}."""
    return unicodedata.category(char) in UNSAFE_CATEGORIES


def printable(text: str) -> str:
    """C{text} with every unsafe character as a visible escape; anything else unchanged."""
    if text.isprintable():  # the usual case, at C speed: nothing to escape
        return text
    return "".join(_escape(c) if is_unsafe(c) else c for c in text)


def printable_lines(text: str) -> str:
    """Like L{printable}, but newlines are kept (a traceback stays readable, line by line)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def describe_char(char: str) -> str:
    """C{U+001B} and the character's Unicode name, for error messages."""
    name = unicodedata.name(char, "")
    if not name and unicodedata.category(char) == "Cc":
        name = {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "TAB", "\x1b": "ESCAPE"}.get(
            char, "CONTROL CHARACTER"
        )
    code = f"U+{ord(char):04X}"
    return f"{code} ({name.lower()})" if name else code


def _first(text: str, bad: frozenset[str] | None = None) -> tuple[int, str] | None:
    for index, char in enumerate(text):
        if (bad is not None and char in bad) or (bad is None and is_unsafe(char)):
            return index, char
    return None


def name_problem(value: str, max_length: int = NAME_MAX) -> str | None:
    """Why C{value} is not acceptable as a name (item, jump group, tag, policy ...), or C{None}.

    A name is 1 to C{max_length} printable characters (no control, bidi or
    other invisible character), has no blank at either end, and is in NFKC form.
    """
    if not 1 <= len(value) <= max_length:
        return f"must be 1 to {max_length} characters long"
    found = _first(value)
    if found is not None:
        index, char = found
        return f"must be printable: {describe_char(char)} at position {index + 1}"
    if value != value.strip():
        return "must not begin or end with a blank"
    if not unicodedata.is_normalized("NFKC", value):
        suggestion = unicodedata.normalize("NFKC", value)
        return f"is not in Unicode NFKC form (write {printable(suggestion)!r})"
    return None


def free_text_problem(value: str, max_length: int) -> str | None:
    """Why C{value} is not acceptable as free text (comments, reasons, tickets), or C{None}.

    Free text is any text up to C{max_length} characters without control
    characters (C0 including tab and newline, DEL, C1), line or paragraph
    separators, bidi controls or lone surrogates.
    """
    if len(value) > max_length:
        return f"must be at most {max_length} characters long"
    for index, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") or char in BIDI_CONTROLS:
            return (
                f"must be one line of text without control characters: {describe_char(char)}"
                f" at position {index + 1}"
            )
    return None


def replace_unsafe(value: str, max_length: int) -> str:
    """Free text made acceptable: unsafe characters escaped, then cut to C{max_length}."""
    return printable(value)[:max_length]


# -- user names ---------------------------------------------------------------

USER_NAME_PUNCTUATION = "._-@"
_ANY_SCRIPT = frozenset({"COMMON", "INHERITED"})
_AUGMENTED = {
    "HAN": frozenset({"HAN", "JAPANESE", "KOREAN", "HAN_WITH_BOPOMOFO"}),
    "HIRAGANA": frozenset({"HIRAGANA", "JAPANESE"}),
    "KATAKANA": frozenset({"KATAKANA", "JAPANESE"}),
    "HANGUL": frozenset({"HANGUL", "KOREAN"}),
    "BOPOMOFO": frozenset({"BOPOMOFO", "HAN_WITH_BOPOMOFO"}),
}
"""UTS #39's augmented script sets: Japanese (Han, Hiragana, Katakana), Korean (Han,
Hangul) and Han with Bopomofo are each written as one script."""


def script_of(char: str) -> str:
    """The Unicode script of C{char} (C{LATIN}, C{CYRILLIC}, C{COMMON} ...).

    The data is the C{confusable_homoglyphs} package's table of Unicode's
    Scripts.txt (a binary search in a small table, no network): the standard
    library's C{unicodedata} has no script property.
    """
    from confusable_homoglyphs import categories

    return str(categories.alias(char))


def scripts_of(value: str) -> set[str]:
    """The scripts of C{value}'s characters, less Common and Inherited (digits, punctuation)."""
    return {script_of(char) for char in value} - _ANY_SCRIPT


def is_single_script(value: str) -> bool:
    """UTS #39 "single script": one script (augmented) covers every letter of C{value}."""
    resolved: frozenset[str] | None = None
    for script in scripts_of(value):
        augmented = _AUGMENTED.get(script, frozenset({script}))
        resolved = augmented if resolved is None else resolved & augmented
    return resolved is None or bool(resolved)


def user_name_problem(value: str) -> str | None:
    """Why C{value} is not acceptable as a user name, or C{None}.

    1 to 128 letters, digits, C{.}, C{_}, C{-} or C{@}; in NFKC form; and
    letters of one script only (Unicode's "single script" restriction of
    UTS #39, L{is_single_script}), so that C{alice} with a Cyrillic C{a}
    (U+0430) can never pass for C{alice}.
    """
    if not 1 <= len(value) <= NAME_MAX:
        return f"must be 1 to {NAME_MAX} characters long"
    if not unicodedata.is_normalized("NFKC", value):
        suggestion = unicodedata.normalize("NFKC", value)
        return f"is not in Unicode NFKC form (write {printable(suggestion)!r})"
    for index, char in enumerate(value):
        if not (char.isalnum() or char in USER_NAME_PUNCTUATION):
            return (
                f"{describe_char(char)} at position {index + 1} is not a letter, a digit,"
                " '.', '_', '-' or '@'"
            )
    if not is_single_script(value):
        counts: dict[str, int] = {}
        for char in value:
            counts[script_of(char)] = counts.get(script_of(char), 0) + 1
        shown = " and ".join(sorted(s.title() for s in scripts_of(value)))
        rarest = min(scripts_of(value), key=lambda s: (counts[s], s))
        index, odd = next((i, c) for i, c in enumerate(value) if script_of(c) == rarest)
        return (
            f"mixes the scripts {shown} ({describe_char(odd)} at position {index + 1});"
            " a user name is written in one script"
        )
    return None


__all__ = [
    "BIDI_CONTROLS",
    "NAME_MAX",
    "UNSAFE_CATEGORIES",
    "describe_char",
    "free_text_problem",
    "is_single_script",
    "is_unsafe",
    "name_problem",
    "printable",
    "printable_lines",
    "replace_unsafe",
    "script_of",
    "scripts_of",
    "user_name_problem",
]
