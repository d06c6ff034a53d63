"""The words of a command line, as ``shlex.split`` gives them, tokenised once per command.

The rules that look at what a command runs (MLP505, MLP712) each need its simple commands
(``a && b; c | d`` is four) as words. ``shlex.split`` reads one character at a time in
Python, which made tokenising the larger part of checking a command; :func:`split` gives the
same words (the tests compare the two on generated input) from one regular expression, and
:func:`simple_commands` keeps the result for each command text, so rules and descriptors
that share a command tokenise it once.
"""

from __future__ import annotations

import functools
import re

#: Separators of simple commands, as far as they can be told without a shell.
SEPARATORS = re.compile(r"&&|\|\||[;|&\n]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
# shlex's POSIX rules with whitespace_split and no comments: a run of plain characters, a
# single-quoted string (no escapes), a double-quoted one (a backslash escapes only `"` and
# itself), a backslash escaping any character, or whitespace (" \t\r\n", not str.isspace).
_PIECE = re.compile(
    r"""(?P<plain>[^ \t\r\n'"\\]+)"""
    r"""|'(?P<single>[^']*)'"""
    r'''|"(?P<double>(?:[^"\\]|\\[\s\S])*)"'''
    r"""|\\(?P<escaped>[\s\S])"""
    r"""|(?P<space>[ \t\r\n]+)"""
)
#: A double quotation left open, its last backslash escaping nothing.
_OPEN_ESCAPE = re.compile(r'"(?:[^"\\]|\\[\s\S])*\\')
_SPACE = re.compile(r"[ \t\r\n]+")
_DOUBLE_ESCAPE = re.compile(r'\\([\\"])')


def split(text: str) -> list[str]:
    """``shlex.split(text)``: the same words, and ``ValueError`` where it raises one (a
    quotation without its end, a backslash at the end)."""
    if "'" not in text and '"' not in text and "\\" not in text:
        return [word for word in _SPACE.split(text) if word]
    words: list[str] = []
    word: list[str] = []
    started = False  # a word has begun: `''` is a word of its own, empty
    position, end = 0, len(text)
    match = _PIECE.match
    while position < end:
        piece = match(text, position)
        if piece is None:
            raise ValueError(_unfinished(text[position:]))
        position = piece.end()
        kind = piece.lastgroup or ""
        if kind == "space":
            if started:
                words.append("".join(word))
                word, started = [], False
            continue
        started = True
        value = piece.group(kind)
        word.append(_DOUBLE_ESCAPE.sub(r"\1", value) if kind == "double" else value)
    if started:
        words.append("".join(word))
    return words


def _unfinished(rest: str) -> str:
    """shlex's message for text that ends inside a quotation or right after a backslash."""
    if rest == "\\" or _OPEN_ESCAPE.fullmatch(rest):
        return "No escaped character"
    return "No closing quotation"


@functools.lru_cache(maxsize=4096)
def simple_commands(command: str) -> tuple[tuple[str, ...], ...]:
    """The words of each simple command in ``command``, leading ``NAME=value`` assignments
    left out; a part that does not tokenise (an unclosed quote) is left out too."""
    result = []
    for part in SEPARATORS.split(command.replace("\\\n", " ")):
        try:
            words = split(part)
        except ValueError:
            continue
        start = 0
        while start < len(words) and _ASSIGNMENT.fullmatch(words[start]):
            start += 1
        result.append(tuple(words[start:]))
    return tuple(result)
