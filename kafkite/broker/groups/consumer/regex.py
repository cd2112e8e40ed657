"""Topic subscriptions by regular expression in Kafka's syntax (RE2), matched in linear time.

Kafka compiles ``SubscribedTopicRegex`` with RE2/J and matches whole topic names. Python's ``re`` is not an
option: it backtracks, so a pattern such as ``(a+)+b`` would stall the broker on a long topic name, and its
syntax differs (RE2 has no backreferences, lookaround, atomic groups, conditionals or possessive quantifiers;
it has POSIX classes ``[[:alpha:]]``, ``\\Q...\\E``, ``\\pN`` / ``\\p{Name}``, ``\\x{10FFFF}``, ``\\z``, flags
anywhere in a group such as ``a(?i)b``, and reads ``{`` literally where it does not start a repetition).

``compile_re2`` parses the RE2 syntax, refuses what RE2 refuses (``RegexError``, answered
INVALID_REGULAR_EXPRESSION), and builds a Thompson automaton that is matched through a DFA built lazily, one
cached transition per (state, character): the time to match a name is linear in its length whatever the
pattern, as with RE2. Greediness (``*?``, the ``U`` flag) does not change whether a whole name matches, so it
is accepted and ignored.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_REPEAT = 1000
# Largest automaton built from one pattern (RE2 refuses patterns too large to compile as well).
MAX_PROGRAM = 20_000
# Cached DFA transitions per pattern before the cache is started afresh.
MAX_TRANSITIONS = 20_000

_POSIX: dict[str, list[tuple[int, int]]] = {
    "alnum": [(48, 57), (65, 90), (97, 122)],
    "alpha": [(65, 90), (97, 122)],
    "ascii": [(0, 127)],
    "blank": [(9, 9), (32, 32)],
    "cntrl": [(0, 31), (127, 127)],
    "digit": [(48, 57)],
    "graph": [(33, 126)],
    "lower": [(97, 122)],
    "print": [(32, 126)],
    "punct": [(33, 47), (58, 64), (91, 96), (123, 126)],
    "space": [(9, 13), (32, 32)],
    "upper": [(65, 90)],
    "word": [(48, 57), (65, 90), (95, 95), (97, 122)],
    "xdigit": [(48, 57), (65, 70), (97, 102)],
}
_PERL: dict[str, list[tuple[int, int]]] = {
    "d": [(48, 57)],
    "s": [(9, 10), (12, 13), (32, 32)],
    "w": [(48, 57), (65, 90), (95, 95), (97, 122)],
}
# Unicode general categories and scripts, by their ASCII members (topic names are ASCII).
_UNICODE: dict[str, list[tuple[int, int]]] = {
    "Any": [(0, 0x10FFFF)],
    "L": [(65, 90), (97, 122)],
    "Lu": [(65, 90)],
    "Ll": [(97, 122)],
    "N": [(48, 57)],
    "Nd": [(48, 57)],
    "P": [(33, 35), (37, 42), (44, 47), (58, 59), (63, 64), (91, 93), (95, 95), (123, 123), (125, 125)],
    "Pc": [(95, 95)],
    "Pd": [(45, 45)],
    "Ps": [(40, 40), (91, 91), (123, 123)],
    "Pe": [(41, 41), (93, 93), (125, 125)],
    "Po": [(33, 35), (37, 39), (42, 42), (44, 44), (46, 47), (58, 59), (63, 64), (92, 92)],
    "S": [(36, 36), (43, 43), (60, 62), (94, 94), (96, 96), (124, 124), (126, 126)],
    "Sc": [(36, 36)],
    "Sk": [(94, 94), (96, 96)],
    "Sm": [(43, 43), (60, 62), (124, 124), (126, 126)],
    "Z": [(32, 32)],
    "Zs": [(32, 32)],
    "C": [(0, 31), (127, 127)],
    "Cc": [(0, 31), (127, 127)],
    "Latin": [(65, 90), (97, 122)],
    "Common": [(0, 64), (91, 96), (123, 127)],
}
# Categories and scripts RE2 knows that have no ASCII member.
_EMPTY_CLASSES = frozenset(
    {
        "Lt",
        "Lm",
        "Lo",
        "M",
        "Mc",
        "Me",
        "Mn",
        "Nl",
        "No",
        "Pi",
        "Pf",
        "So",
        "Zl",
        "Zp",
        "Cf",
        "Co",
        "Cs",
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
    }
)
_SIMPLE_ESCAPES = {"a": 7, "f": 12, "t": 9, "n": 10, "r": 13, "v": 11}
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_MAX_CHAR = 0x10FFFF


class RegexError(ValueError):
    """A pattern RE2 rejects; the message says why, as RE2 does."""


# -- character sets ------------------------------------------------------------------------------------------


def _normalize(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def _negate(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_CHAR:
        out.append((nxt, _MAX_CHAR))
    return tuple(out)


def _fold(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Add the other case of ASCII letters (case-insensitive matching)."""
    out = list(ranges)
    for lo, hi in ranges:
        for a, b, shift in ((65, 90, 32), (97, 122, -32)):
            s, e = max(lo, a), min(hi, b)
            if s <= e:
                out.append((s + shift, e + shift))
    return out


def _contains(ranges: tuple[tuple[int, int], ...], c: int) -> bool:
    for lo, hi in ranges:
        if c < lo:
            return False
        if c <= hi:
            return True
    return False


# -- the parser: RE2 syntax to a tree ------------------------------------------------------------------------
#
# Nodes: ("set", ranges) one character of a set; ("assert", kind); ("cat", [nodes]); ("alt", [nodes]);
# ("rep", node, min, max) with max -1 for no bound. Assertion kinds: "^" (start of text), "^m" (start of a
# line), "$" (end of text), "$m" (end of a line), "b" / "B" (at / not at a word boundary).

Node = tuple[object, ...]


@dataclass
class _Flags:
    i: bool = False
    m: bool = False
    s: bool = False


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.names: set[str] = set()

    def error(self, what: str) -> RegexError:
        return RegexError(f"error parsing regexp: {what}: `{self.p}`")

    def parse(self) -> Node:
        node = self.alternation(_Flags(), top=True)
        if self.i < len(self.p):
            raise self.error("unexpected )")
        return node

    def alternation(self, flags: _Flags, *, top: bool) -> Node:
        """Branches up to the closing parenthesis of the enclosing group (or the end). Flags set with
        ``(?flags)`` last until the end of the group, across ``|``, as in RE2."""
        branches: list[Node] = []
        items: list[Node] = []
        can_repeat = False
        flags = _Flags(flags.i, flags.m, flags.s)
        while self.i < len(self.p):
            c = self.p[self.i]
            if c == ")":
                if top:
                    raise self.error("unexpected )")
                break
            if c == "|":
                branches.append(("cat", items))
                items = []
                self.i += 1
                can_repeat = False
                continue
            if c in "*+?" or (c == "{" and _REPEAT.match(self.p, self.i)):
                if not can_repeat:
                    op = c if c != "{" else _REPEAT.match(self.p, self.i).group(0)  # type: ignore[union-attr]
                    raise self.error(f"missing argument to repetition operator: `{op}`")
                items[-1] = self.quantifier(items[-1])
                can_repeat = False
                continue
            if c == "(":
                node = self.group(flags)
                if node is None:
                    can_repeat = False  # (?flags): changed ``flags`` in place
                else:
                    items.append(node)
                    can_repeat = True
                continue
            if c == "[":
                items.append(("set", self.char_class(flags)))
                can_repeat = True
                continue
            if c == "\\":
                node, is_atom = self.escape(flags)
                if node is not None:
                    items.append(node)
                can_repeat = is_atom
                continue
            self.i += 1
            if c == "^":
                items.append(("assert", "^m" if flags.m else "^"))
            elif c == "$":
                items.append(("assert", "$m" if flags.m else "$"))
            elif c == ".":
                items.append(("set", ((0, _MAX_CHAR),) if flags.s else ((0, 9), (11, _MAX_CHAR))))
            else:
                items.append(("set", self.literal(ord(c), flags)))
            can_repeat = True
        branches.append(("cat", items))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    @staticmethod
    def literal(code: int, flags: _Flags) -> tuple[tuple[int, int], ...]:
        ranges = [(code, code)]
        return _normalize(_fold(ranges) if flags.i else ranges)

    def quantifier(self, node: Node) -> Node:
        p = self.p
        c = p[self.i]
        if c == "{":
            m = _REPEAT.match(p, self.i)
            assert m is not None
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else -1)
            if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi >= 0 and hi < lo):
                raise self.error(f"invalid repeat count: `{m.group(0)}`")
            op = m.group(0)
            self.i = m.end()
        else:
            lo, hi = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[c]
            op = c
            self.i += 1
        lazy = self.i < len(p) and p[self.i] == "?"
        if lazy:
            self.i += 1
        if self.i < len(p) and (p[self.i] in "*+?" or _REPEAT.match(p, self.i)):
            raise self.error(f"bad repetition operator: `{op}{'?' if lazy else ''}{p[self.i]}`")
        return ("rep", node, lo, hi)

    def group(self, flags: _Flags) -> Node | None:
        """A parenthesised group; None for a bare ``(?flags)`` (which changes ``flags``)."""
        p, i = self.p, self.i
        if not p.startswith("(?", i):
            self.i += 1
            return self.body(flags)
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
            return self.body(flags)
        # Flags: (?flags) or (?flags:re), from imsU with an optional negated part.
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
        self.i = j + 1
        new = _Flags(flags.i, flags.m, flags.s)
        for f in on:
            if f in "ims":
                setattr(new, f, True)
        for f in off:
            if f in "ims":
                setattr(new, f, False)
        if p[j] == ")":
            flags.i, flags.m, flags.s = new.i, new.m, new.s
            return None
        return self.body(new)

    def body(self, flags: _Flags) -> Node:
        start = self.i
        node = self.alternation(flags, top=False)
        if self.i >= len(self.p):
            raise self.error(f"missing closing ): `{self.p[start - 1 :]}`")
        self.i += 1
        return node

    # -- escapes ---------------------------------------------------------------------------------------------

    def escape(self, flags: _Flags) -> tuple[Node | None, bool]:
        """An escape outside a class: (node or None for nothing, whether a quantifier may follow)."""
        p, i = self.p, self.i
        if i + 1 >= len(p):
            raise self.error("trailing backslash at end of expression")
        c = p[i + 1]
        if c == "Q":
            end = p.find("\\E", i + 2)
            literal = p[i + 2 :] if end < 0 else p[i + 2 : end]
            self.i = len(p) if end < 0 else end + 2
            if not literal:
                return None, False
            return ("cat", [("set", self.literal(ord(ch), flags)) for ch in literal]), True
        if c == "E":
            self.i = i + 2  # a stray \E is ignored by RE2
            return None, False
        if c in "AbBz":
            self.i = i + 2
            return ("assert", {"A": "^", "z": "$", "b": "b", "B": "B"}[c]), False
        if c.lower() in _PERL:
            self.i = i + 2
            ranges = _normalize(_PERL[c.lower()])
            return ("set", _negate(ranges) if c.isupper() else ranges), True
        if c in "pP":
            ranges, negated = self.unicode_class()
            ranges = _normalize(_fold(list(ranges)) if flags.i else list(ranges))
            return ("set", _negate(ranges) if negated else ranges), True
        return ("set", self.literal(self.literal_escape(), flags)), True

    def literal_escape(self) -> int:
        """An escape that stands for one character (outside or inside a class); its code point."""
        p, i = self.p, self.i
        c = p[i + 1]
        if c in _SIMPLE_ESCAPES:
            self.i = i + 2
            return _SIMPLE_ESCAPES[c]
        if c == "x":
            if p.startswith("{", i + 2):
                end = p.find("}", i + 3)
                digits = p[i + 3 : end] if end >= 0 else ""
                if end < 0 or not re.fullmatch(r"[0-9A-Fa-f]+", digits) or int(digits, 16) > _MAX_CHAR:
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

    def unicode_class(self) -> tuple[tuple[tuple[int, int], ...], bool]:
        """``\\pX``, ``\\p{Name}``, ``\\PX``, ``\\p{^Name}``: (its ASCII members, negated)."""
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
            return _normalize(_UNICODE[name]), negated
        if name in _EMPTY_CLASSES:
            return (), negated
        raise self.error(f"invalid character class range: `{p[i : self.i]}`")

    # -- character classes -----------------------------------------------------------------------------------

    def char_class(self, flags: _Flags) -> tuple[tuple[int, int], ...]:
        p = self.p
        start = self.i
        self.i += 1
        negated = p.startswith("^", self.i)
        if negated:
            self.i += 1
        ranges: list[tuple[int, int]] = []
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
                    ranges += _negate(_normalize(members)) if neg else members
                    continue
            lo = self.class_atom(ranges)
            if lo is None:
                continue
            # A range a-z (a '-' before ']' is a literal).
            if p.startswith("-", self.i) and self.i + 1 < len(p) and p[self.i + 1] != "]":
                dash = self.i
                self.i += 1
                hi = self.class_atom(None)
                if hi is None or hi < lo:
                    raise self.error(f"invalid character class range: `{p[dash - 1 : self.i]}`")
                ranges.append((lo, hi))
            else:
                ranges.append((lo, lo))
        result = _normalize(_fold(ranges) if flags.i else ranges)
        return _negate(result) if negated else result

    def class_atom(self, ranges: list[tuple[int, int]] | None) -> int | None:
        """One character of a class (its code point), or None when a class escape (\\d, \\p{..}) was added
        to ``ranges`` (None: not allowed here, the end of a range)."""
        p, i = self.p, self.i
        c = p[i]
        if c != "\\":
            self.i += 1
            return ord(c)
        if i + 1 >= len(p):
            raise self.error("trailing backslash at end of expression")
        e = p[i + 1]
        if e.lower() in _PERL or e in "pP":
            if ranges is None:
                raise self.error(f"invalid character class range: `{p[max(i - 2, 0) : i + 2]}`")
            if e in "pP":
                members, negated = self.unicode_class()
            else:
                self.i += 2
                members, negated = _normalize(_PERL[e.lower()]), e.isupper()
            ranges += _negate(members) if negated else members
            return None
        return self.literal_escape()


# -- the automaton -------------------------------------------------------------------------------------------

# Instructions: ("char", ranges, next), ("split", a, b), ("assert", kind, next), ("match",).
Instr = tuple[object, ...]


class _Compiler:
    def __init__(self) -> None:
        self.prog: list[list[object]] = []

    def emit(self, *ins: object) -> int:
        if len(self.prog) >= MAX_PROGRAM:
            raise RegexError("error parsing regexp: expression too large")
        self.prog.append(list(ins))
        return len(self.prog) - 1

    def compile(self, node: Node) -> list[Instr]:
        entry, holes = self.frag(node)
        end = self.emit("match")
        self.patch(holes, end)
        start = self.emit("split", entry, entry)  # the program starts at its last instruction
        del start
        return [tuple(ins) for ins in self.prog]

    def patch(self, holes: list[tuple[int, int]], target: int) -> None:
        for pc, slot in holes:
            self.prog[pc][slot] = target

    def frag(self, node: Node) -> tuple[int, list[tuple[int, int]]]:
        """(entry instruction, the slots to point at what follows). An empty fragment is a split to itself
        patched twice (a no-op jump)."""
        kind = node[0]
        if kind == "set":
            pc = self.emit("char", node[1], -1)
            return pc, [(pc, 2)]
        if kind == "assert":
            pc = self.emit("assert", node[1], -1)
            return pc, [(pc, 2)]
        if kind == "cat":
            parts = node[1]
            assert isinstance(parts, list)
            if not parts:
                pc = self.emit("split", -1, -1)
                return pc, [(pc, 1), (pc, 2)]
            entry, holes = self.frag(parts[0])
            for part in parts[1:]:
                e, h = self.frag(part)
                self.patch(holes, e)
                holes = h
            return entry, holes
        if kind == "alt":
            branches = node[1]
            assert isinstance(branches, list)
            entries_holes = [self.frag(b) for b in branches]
            entry, holes = entries_holes[-1]
            for e, h in reversed(entries_holes[:-1]):
                entry = self.emit("split", e, entry)
                holes = h + holes
            return entry, holes
        if kind == "rep":
            _, sub, lo, hi = node
            assert isinstance(sub, tuple) and isinstance(lo, int) and isinstance(hi, int)
            pieces: list[Node] = [sub] * lo
            if hi < 0:
                pieces.append(("star", sub))
            else:
                pieces += [("opt", sub)] * (hi - lo)
            return self.frag(("cat", pieces))
        if kind == "star":
            split = self.emit("split", -1, -1)
            e, h = self.frag(node[1])  # type: ignore[arg-type]
            self.prog[split][1] = e
            self.patch(h, split)
            return split, [(split, 2)]
        if kind == "opt":
            e, h = self.frag(node[1])  # type: ignore[arg-type]
            split = self.emit("split", e, -1)
            return split, [*h, (split, 2)]
        raise AssertionError(kind)


# What the character before a position is, for the assertions: the start of the text, a word character,
# a newline or another character.
_START, _WORD, _NEWLINE, _OTHER = 0, 1, 2, 3
_END = -1


def _kind(c: int) -> int:
    if c == 10:
        return _NEWLINE
    if 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95:
        return _WORD
    return _OTHER


def _holds(kind: object, before: int, after: int) -> bool:
    """Whether an assertion holds between a character of ``before``'s kind and the character ``after``
    (its code point, or _END)."""
    if kind == "^":
        return before == _START
    if kind == "^m":
        return before in (_START, _NEWLINE)
    if kind == "$":
        return after == _END
    if kind == "$m":
        return after in (_END, 10)
    word_before = before == _WORD
    word_after = after != _END and _kind(after) == _WORD
    return (word_before != word_after) == (kind == "b")


class Re2Pattern:
    """A compiled RE2 pattern; ``fullmatch(name)`` in time linear in the name's length."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._prog = _Compiler().compile(_Parser(pattern).parse())
        self._start = frozenset([len(self._prog) - 1])
        self._transitions: dict[tuple[frozenset[int], int, int], frozenset[int]] = {}
        self._accepts: dict[tuple[frozenset[int], int], bool] = {}

    def _closure(self, pcs: frozenset[int], before: int, after: int) -> list[int]:
        """The character and match instructions reachable from ``pcs`` without reading a character."""
        out: list[int] = []
        seen: set[int] = set()
        stack = list(pcs)
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            ins = self._prog[pc]
            op = ins[0]
            if op == "split":
                stack.append(ins[2])  # type: ignore[arg-type]
                stack.append(ins[1])  # type: ignore[arg-type]
            elif op == "assert":
                if _holds(ins[1], before, after):
                    stack.append(ins[2])  # type: ignore[arg-type]
            else:
                out.append(pc)
        return out

    def _step(self, state: frozenset[int], before: int, c: int) -> frozenset[int]:
        key = (state, before, c)
        nxt = self._transitions.get(key)
        if nxt is None:
            targets = set()
            for pc in self._closure(state, before, c):
                ins = self._prog[pc]
                if ins[0] == "char" and _contains(ins[1], c):  # type: ignore[arg-type]
                    targets.add(ins[2])
            nxt = frozenset(targets)  # type: ignore[arg-type]
            if len(self._transitions) >= MAX_TRANSITIONS:
                self._transitions.clear()
            self._transitions[key] = nxt
        return nxt

    def fullmatch(self, text: str) -> bool:
        state, before = self._start, _START
        for ch in text:
            c = ord(ch)
            state = self._step(state, before, c)
            if not state:
                return False
            before = _kind(c)
        key = (state, before)
        accepted = self._accepts.get(key)
        if accepted is None:
            accepted = any(self._prog[pc][0] == "match" for pc in self._closure(state, before, _END))
            self._accepts[key] = accepted
        return accepted


@functools.lru_cache(maxsize=1024)
def compile_re2(pattern: str) -> Re2Pattern:
    """The compiled pattern (cached); RegexError if RE2 rejects it."""
    return Re2Pattern(pattern)


def matches(pattern: str, topic: str) -> bool:
    """Whether ``topic`` matches the whole RE2 ``pattern``."""
    return compile_re2(pattern).fullmatch(topic)
