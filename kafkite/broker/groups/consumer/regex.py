"""Topic subscriptions by regular expression in Kafka's syntax (RE2), matched with Python's ``re``.

Kafka compiles ``SubscribedTopicRegex`` with RE2/J and matches whole topic names. RE2 and Python's ``re``
differ: RE2 has no backreferences, lookaround, atomic groups, conditionals or possessive quantifiers; it has
POSIX classes (``[[:alpha:]]``), ``\\Q...\\E`` literals, ``\\pN`` / ``\\p{Name}`` classes, ``\\x{10FFFF}``,
``\\z``, flags anywhere in a group (``a(?i)b``) and the ungreedy flag ``U``; it caps repetition counts at 1000
and reads ``{`` literally where it does not start a repetition. ``translate`` parses the RE2 syntax, refuses
what RE2 refuses (``RegexError``: the coordinator answers INVALID_REGULAR_EXPRESSION) and writes an equivalent
Python expression, to be matched against whole names with ``re.ASCII`` (RE2's ``\\d``, ``\\w``, ``\\s`` and
``\\b`` are ASCII). Topic names are ASCII, so Unicode classes are translated to their ASCII members.
"""

from __future__ import annotations

import functools
import re

MAX_REPEAT = 1000

_POSIX: dict[str, str] = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

# Unicode general categories and scripts, restricted to the ASCII characters (topic names are ASCII).
_UNICODE: dict[str, str] = {
    "Any": "\\x00-\\x7f",
    "L": "A-Za-z",
    "Lu": "A-Z",
    "Ll": "a-z",
    "Lt": "",
    "Lm": "",
    "Lo": "",
    "M": "",
    "Mc": "",
    "Me": "",
    "Mn": "",
    "N": "0-9",
    "Nd": "0-9",
    "Nl": "",
    "No": "",
    "P": "!-#%-*,-/:;?@\\[-\\]_{}",
    "Pc": "_",
    "Pd": "\\-",
    "Ps": "(\\[{",
    "Pe": ")\\]}",
    "Pi": "",
    "Pf": "",
    "Po": "!-#%-'*,./:;?@\\\\",
    "S": "$+<->^`|~",
    "Sc": "$",
    "Sk": "^`",
    "Sm": "+<->|~",
    "So": "",
    "Z": " ",
    "Zs": " ",
    "Zl": "",
    "Zp": "",
    "C": "\\x00-\\x1f\\x7f",
    "Cc": "\\x00-\\x1f\\x7f",
    "Cf": "",
    "Co": "",
    "Cs": "",
    "Latin": "A-Za-z",
    "Common": "\\x00-@\\[-`{-\\x7f",
}
# Scripts RE2 knows whose letters never occur in a topic name.
_OTHER_SCRIPTS = frozenset(
    [
        "Arabic",
        "Armenian",
        "Bengali",
        "Bopomofo",
        "Braille",
        "Buhid",
        "Canadian_Aboriginal",
        "Cherokee",
        "Cyrillic",
        "Devanagari",
        "Ethiopic",
        "Georgian",
        "Greek",
        "Gujarati",
        "Gurmukhi",
        "Han",
        "Hangul",
        "Hanunoo",
        "Hebrew",
        "Hiragana",
        "Inherited",
        "Kannada",
        "Katakana",
        "Khmer",
        "Lao",
        "Limbu",
        "Malayalam",
        "Mongolian",
        "Myanmar",
        "Ogham",
        "Oriya",
        "Runic",
        "Sinhala",
        "Syriac",
        "Tagalog",
        "Tagbanwa",
        "Tamil",
        "Telugu",
        "Thaana",
        "Thai",
        "Tibetan",
        "Yi",
    ]
)
_SIMPLE_ESCAPES = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
_PERL_CLASSES = frozenset("dDsSwW")
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_NAME = re.compile(r"[A-Za-z0-9_]+")


class RegexError(ValueError):
    """A pattern RE2 rejects; the message says why, as RE2 does."""


def _char(code: int) -> str:
    """A literal character, escaped for use inside or outside a Python character class."""
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class _Translator:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.out: list[str] = []
        self.names: set[str] = set()
        # Class escapes (\d, \p{..}) met while reading the current character class.
        self._pending_parts: list[str] = []

    def error(self, what: str) -> RegexError:
        return RegexError(f"error parsing regexp: {what}: `{self.p}`")

    # -- entry -------------------------------------------------------------------------------------------

    def run(self) -> str:
        self.alternation(ungreedy=False, top=True)
        if self.i < len(self.p):
            raise self.error("unexpected )")
        return "".join(self.out)

    def alternation(self, *, ungreedy: bool, top: bool) -> None:
        """Branches up to the closing parenthesis of the enclosing group (or the end)."""
        # Flags set by ``(?flags)`` in this group: they last to its end, across ``|`` (RE2 semantics).
        scoped: list[str] = []
        can_repeat = False
        while self.i < len(self.p):
            c = self.p[self.i]
            if c == ")":
                if top:
                    raise self.error("unexpected )")
                break
            if c == "|":
                self.out.append(")" * len(scoped) + "|" + "".join(f"(?{f}:" for f in scoped))
                self.i += 1
                can_repeat = False
                continue
            if c in "*+?":
                if not can_repeat:
                    raise self.error(f"missing argument to repetition operator: `{c}`")
                self.i += 1
                self.quantifier(c, ungreedy)
                can_repeat = False
                continue
            if c == "{":
                m = _REPEAT.match(self.p, self.i)
                if m is not None:
                    if not can_repeat:
                        raise self.error(f"missing argument to repetition operator: `{m.group(0)}`")
                    lo = int(m.group(1))
                    hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
                    if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi >= 0 and hi < lo):
                        raise self.error(f"invalid repeat count: `{m.group(0)}`")
                    self.i = m.end()
                    self.quantifier(m.group(0), ungreedy)
                    can_repeat = False
                    continue
                self.out.append("\\{")
                self.i += 1
                can_repeat = True
                continue
            if c == "(":
                flags = self.group(ungreedy)
                if flags is not None:
                    # ``(?flags)``: the rest of this group runs with them.
                    set_flags, ungreedy = flags
                    if set_flags:
                        scoped.append(set_flags)
                        self.out.append(f"(?{set_flags}:")
                    can_repeat = False
                else:
                    can_repeat = True
                continue
            if c == "[":
                self.out.append(self.char_class())
                can_repeat = True
                continue
            if c == "\\":
                piece, is_atom = self.escape()
                self.out.append(piece)
                can_repeat = is_atom
                continue
            if c in "^$":
                self.out.append(c)
                self.i += 1
                can_repeat = True
                continue
            if c == ".":
                self.out.append(".")
                self.i += 1
                can_repeat = True
                continue
            self.out.append(re.escape(c))
            self.i += 1
            can_repeat = True
        self.out.append(")" * len(scoped))

    def quantifier(self, op: str, ungreedy: bool) -> None:
        lazy = self.i < len(self.p) and self.p[self.i] == "?"
        if lazy:
            self.i += 1
        if self.i < len(self.p) and (self.p[self.i] in "*+?" or _REPEAT.match(self.p, self.i)):
            raise self.error(f"bad repetition operator: `{op}{'?' if lazy else ''}{self.p[self.i]}`")
        # The U flag swaps the meaning of the lazy marker.
        self.out.append(op + ("?" if lazy != ungreedy else ""))

    def group(self, ungreedy: bool) -> tuple[str, bool] | None:
        """A parenthesised group; returns (flags, ungreedy) for a bare ``(?flags)``, None otherwise."""
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self.i += 1
            self.out.append("(")
            self.body(ungreedy)
            return None
        if p.startswith(("(?P<", "(?<"), i) and not p.startswith(("(?<=", "(?<!"), i):
            start = i + (4 if p.startswith("(?P<", i) else 3)
            end = p.find(">", start)
            name = p[start:end] if end >= 0 else ""
            if end < 0 or not _NAME.fullmatch(name):
                raise self.error(f"invalid named capture: `{p[i : end + 1 if end >= 0 else len(p)]}`")
            if name in self.names:
                raise self.error(f"duplicate capture group name: `{name}`")
            self.names.add(name)
            self.i = end + 1
            self.out.append(f"(?P<{name}>")
            self.body(ungreedy)
            return None
        # Flags: (?flags) or (?flags:re), flags from imsU with an optional '-' part.
        j = i + 2
        on, off, negate = "", "", False
        while j < len(p) and p[j] not in ":)":
            f = p[j]
            if f == "-" and not negate:
                negate = True
            elif f in "imsU" and f not in on + off:
                if negate:
                    off += f
                else:
                    on += f
            else:
                end = p.find(")", j)
                bad = p[i : (end + 1) if end >= 0 else j + 1]
                raise self.error(f"invalid or unsupported Perl syntax: `{bad}`")
            j += 1
        if j >= len(p):
            raise self.error(f"missing closing ): `{p[i:]}`")
        if (negate and not off) or (not on and not off and not (p[j] == ":" and not negate)):
            raise self.error(f"invalid or unsupported Perl syntax: `{p[i : j + 1]}`")
        new_ungreedy = (ungreedy or "U" in on) and "U" not in off
        py_on = on.replace("U", "")
        py_off = off.replace("U", "")
        py_flags = py_on + (f"-{py_off}" if py_off else "")
        self.i = j + 1
        if p[j] == ")":
            return py_flags, new_ungreedy
        self.out.append(f"(?{py_flags}:" if py_flags else "(?:")
        self.body(new_ungreedy)
        return None

    def body(self, ungreedy: bool) -> None:
        start = self.i
        self.alternation(ungreedy=ungreedy, top=False)
        if self.i >= len(self.p):
            raise self.error(f"missing closing ): `{self.p[start - 1 :]}`")
        self.i += 1
        self.out.append(")")

    # -- escapes -------------------------------------------------------------------------------------------

    def escape(self) -> tuple[str, bool]:
        """An escape outside a class: (python text, whether a quantifier may follow)."""
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise self.error("trailing backslash at end of expression")
        c = p[i + 1]
        if c == "Q":
            end = p.find("\\E", i + 2)
            literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
            self.i = len(p) if end < 0 else end + 2
            return "".join(re.escape(ch) for ch in literal), bool(literal)
        if c == "E":
            # A stray \E is ignored by RE2.
            self.i = i + 2
            return "", False
        if c in "AbB":
            self.i = i + 2
            return "\\" + c, False
        if c == "z":
            self.i = i + 2
            return "\\Z", False
        if c in _PERL_CLASSES:
            self.i = i + 2
            return "\\" + c, True
        if c in "pP":
            members, negated = self.unicode_class()
            if not members:
                return ("(?s:.)" if negated else "(?!)"), True
            return ("[^" if negated else "[") + members + "]", True
        code = self.literal_escape()
        return _char(code), True

    def literal_escape(self) -> int:
        """An escape that stands for one character (outside or inside a class); returns its code point."""
        p, i = self.p, self.i
        c = p[i + 1]
        if c in _SIMPLE_ESCAPES:
            self.i = i + 2
            return _SIMPLE_ESCAPES[c]
        if c == "x":
            if p.startswith("{", i + 2):
                end = p.find("}", i + 3)
                digits = p[i + 3 : end] if end >= 0 else ""
                if end < 0 or not re.fullmatch(r"[0-9A-Fa-f]+", digits) or int(digits, 16) > 0x10FFFF:
                    raise self.error(f"invalid escape sequence: `{p[i : (end + 1) if end >= 0 else len(p)]}`")
                self.i = end + 1
                return int(digits, 16)
            digits = p[i + 2 : i + 4]
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise self.error(f"invalid escape sequence: `{p[i : i + 4]}`")
            self.i = i + 4
            return int(digits, 16)
        if c in "01234567":
            m = re.match(r"[0-7]{1,3}", p[i + 1 :])
            assert m is not None
            digits = m.group(0)
            if c != "0" and len(digits) == 1:
                # \1 .. \7 alone would be a backreference: RE2 has none.
                raise self.error(f"invalid escape sequence: `\\{c}`")
            self.i = i + 1 + len(digits)
            return int(digits, 8)
        if ord(c) < 0x80 and not c.isalnum() and c != "_":
            self.i = i + 2
            return ord(c)
        raise self.error(f"invalid escape sequence: `\\{c}`")

    def unicode_class(self) -> tuple[str, bool]:
        """``\\pX``, ``\\p{Name}``, ``\\PX``, ``\\p{^Name}``: (ASCII members for a class, negated)."""
        p, i = self.p, self.i
        negated = p[i + 1] == "P"
        if p.startswith("{", i + 2):
            end = p.find("}", i + 3)
            if end < 0:
                raise self.error(f"invalid character class range: `{p[i:]}`")
            name = p[i + 3 : end]
            self.i = end + 1
        else:
            if i + 2 >= len(p):
                raise self.error(f"invalid character class range: `{p[i:]}`")
            name = p[i + 2]
            self.i = i + 3
        if name.startswith("^"):
            negated, name = not negated, name[1:]
        if name in _UNICODE:
            return _UNICODE[name], negated
        if name in _OTHER_SCRIPTS:
            return "", negated
        raise self.error(f"invalid character class range: `{p[i : self.i]}`")

    # -- character classes ---------------------------------------------------------------------------------

    def char_class(self) -> str:
        p = self.p
        start = self.i
        self.i += 1
        negated = p.startswith("^", self.i)
        if negated:
            self.i += 1
        parts: list[str] = []
        first = True
        while True:
            if self.i >= len(p):
                raise self.error(f"missing closing ]: `{p[start:]}`")
            c = p[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            if p.startswith("[:", self.i):
                end = p.find(":]", self.i + 2)
                if end >= 0:
                    name = p[self.i + 2 : end]
                    neg = name.startswith("^")
                    members = _POSIX.get(name[1:] if neg else name)
                    if members is None:
                        raise self.error(f"invalid character class range: `{p[self.i : end + 2]}`")
                    self.i = end + 2
                    parts.append(f"[^{members}]" if neg else members)
                    continue
            lo = self.class_atom()
            if lo is None:
                continue
            # A range a-z (a '-' before ']' is a literal).
            if p.startswith("-", self.i) and self.i + 1 < len(p) and p[self.i + 1] != "]":
                dash = self.i
                self.i += 1
                hi = self.class_atom(parts_allowed=False)
                if hi is None or hi < lo:
                    raise self.error(f"invalid character class range: `{p[dash - 1 : self.i]}`")
                parts.append(_char(lo) + "-" + _char(hi))
            else:
                parts.append(_char(lo))
        return self.render_class(parts, negated)

    def class_atom(self, parts_allowed: bool = True) -> int | None:
        """One character of a class (its code point), or None if a class escape (\\d, \\p{..}) was added."""
        p, i = self.p, self.i
        c = p[i]
        if c != "\\":
            self.i += 1
            return ord(c)
        if i + 1 >= len(p):
            raise self.error("trailing backslash at end of expression")
        e = p[i + 1]
        if e in _PERL_CLASSES or e in "pP":
            if not parts_allowed:
                raise self.error(f"invalid character class range: `{p[i - 2 : i + 2]}`")
            if e in "pP":
                members, negated = self.unicode_class()
                self._pending_parts.append(("^" if negated else "") + members)
            else:
                self.i += 2
                self._pending_parts.append("\\" + e)
            return None
        return self.literal_escape()

    def render_class(self, parts: list[str], negated: bool) -> str:
        extra = self._pending_parts
        self._pending_parts = []
        simple = [x for x in parts if not x.startswith("[^")]
        # Negated members ([:^alpha:], \P{..}) cannot sit inside a Python class: use alternation around it.
        negated_sets = [x[2:-1] for x in parts if x.startswith("[^")]
        for x in extra:
            if x.startswith("^"):
                negated_sets.append(x[1:])
            elif x:
                simple.append(x)
        if not negated_sets:
            body = "".join(simple)
            if not body:
                return "(?s:.)" if negated else "(?!)"
            return ("[^" if negated else "[") + body + "]"
        alternatives = ([f"[{''.join(simple)}]"] if simple else []) + [
            f"[^{members}]" if members else "(?s:.)" for members in negated_sets
        ]
        union = "(?:" + "|".join(alternatives) + ")"
        return f"(?:(?!{union})(?s:.))" if negated else union


def translate(pattern: str) -> str:
    """The Python equivalent of the RE2 ``pattern`` (to be used with ``re.ASCII``); RegexError if RE2 would
    refuse it."""
    python = _Translator(pattern).run()
    try:
        re.compile(python, re.ASCII)
    except re.error as exc:  # a construct this translation does not cover
        raise RegexError(f"error parsing regexp: {exc}: `{pattern}`") from None
    return python


@functools.lru_cache(maxsize=1024)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """The compiled pattern (cached); RegexError if RE2 rejects it."""
    return re.compile(translate(pattern), re.ASCII)


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the whole RE2 ``pattern``."""
    return compile_re2(pattern).fullmatch(topic) is not None
