"""R entry points read as text: which R scripts a command runs, and whether they load SparkR
before installing it from the Databricks runtime's copy (MLP712).

No R interpreter is needed, and none is run. The R source is split into names, strings and
punctuation, with comments dropped, which is enough to tell ``library(SparkR)`` from the same
words in a comment or a string. Anything that cannot be told for certain (a script name that
is not a literal, a file that cannot be read, a script outside the project) says nothing: a
check that guesses would cry wolf on code that works.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_mlproject import _fs, _shell, _yaml
from pytest_mlproject.problems import Problem
from pytest_mlproject.spec import EntryPoint, Project

#: Where a Databricks runtime keeps its copy of SparkR; Databricks' page on MLflow projects
#: asks a project run to install it from there (``/databricks/spark/R/pkg``) before loading it.
RUNTIME_SPARKR = "/databricks/spark/R"
SNIPPET = (
    'if (file.exists("/databricks/spark/R/pkg")) install.packages("/databricks/spark/R/pkg", '
    'repos = NULL) else install.packages("SparkR")'
)

_NOT_LITERAL = re.compile(r"[{}$`*?]")
#: Calls that load SparkR whatever their arguments (a session needs the package loaded).
_SESSION_CALLS = {"sparkR.session", "sparkR.init"}
_LIBRARY_CALLS = {"library", "require"}
_SOURCE_CALLS = {"source", "sys.source", "mlflow_source"}
_NAME = re.compile(r"[A-Za-z_.\u00c0-\uffff][A-Za-z0-9_.\u00c0-\uffff]*")
_NUMBER = re.compile(r"[0-9][0-9A-Za-z_.]*")
_RAW_STRING = re.compile(r"[rR](['\"])(-*)([(\[{])")
_CLOSING = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "string" or "op"
    text: str
    line: int


def tokens(source: str) -> list[Token]:
    """The names, strings and punctuation of R source, comments left out, each with its line.

    Backquoted names are names; raw strings (``r"(...)"``) are strings. An unterminated string
    runs to the end of the text, as R would complain before running anything.
    """
    found: list[Token] = []
    line, i, end = 1, 0, len(source)
    while i < end:
        char = source[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":
            newline = source.find("\n", i)
            i = end if newline < 0 else newline
        elif (raw := _RAW_STRING.match(source, i)) is not None:
            quote, dashes, opening = raw.groups()
            closer = _CLOSING[opening] + dashes + quote
            stop = source.find(closer, raw.end())
            stop = end if stop < 0 else stop
            found.append(Token("string", source[raw.end() : stop], line))
            line += source.count("\n", i, stop)
            i = stop + len(closer)
        elif char in "\"'`":
            text, j = _quoted(source, i)
            found.append(Token("name" if char == "`" else "string", text, line))
            line += source.count("\n", i, j)
            i = j
        elif (name := _NAME.match(source, i)) is not None:
            found.append(Token("name", name.group(), line))
            i = name.end()
        elif (number := _NUMBER.match(source, i)) is not None:
            found.append(Token("number", number.group(), line))
            i = number.end()
        else:
            op = ":::" if source.startswith(":::", i) else source[i : i + 2]
            op = op if op in (":::", "::") else char
            found.append(Token("op", op, line))
            i += len(op)
    return found


def _quoted(source: str, start: int) -> tuple[str, int]:
    """The text of the string or backquoted name at ``start`` (escapes kept as written, but
    for an escaped quote) and the index after its closing quote."""
    quote = source[start]
    parts: list[str] = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == "\\" and i + 1 < len(source):
            parts.append(source[i + 1] if source[i + 1] in "\"'`\\" else source[i : i + 2])
            i += 2
        elif char == quote:
            return "".join(parts), i + 1
        else:
            parts.append(char)
            i += 1
    return "".join(parts), len(source)


@dataclass(frozen=True)
class Event:
    """Something a script does that matters here, in the order it is written."""

    kind: str  # "load", "setup" or "source"
    path: Path
    line: int
    #: What the code says: ``library(SparkR)``, or the file a ``source`` call names.
    text: str


def events(path: Path, source: str) -> list[Event]:
    """Loads of SparkR, mentions of the runtime's copy and literal ``source`` calls in
    ``source``, in order. A mention counts wherever it is (``install.packages(p)`` after
    ``p <- "/databricks/spark/R/pkg"``, or ``library(SparkR, lib.loc = ...)``): the check
    errs towards silence."""
    found: list[Event] = []
    words = tokens(source)
    for index, token in enumerate(words):
        after = words[index + 1] if index + 1 < len(words) else None
        before = words[index - 1] if index else None
        if token.kind == "string" and token.text.startswith(RUNTIME_SPARKR):
            found.append(Event("setup", path, token.line, token.text))
        if token.kind != "name" or (before is not None and before.text in ("$", "@")):
            continue
        calls = after is not None and after.text == "("
        if calls and token.text in _SESSION_CALLS:
            found.append(Event("load", path, token.line, f"{token.text}()"))
        elif calls and token.text in _LIBRARY_CALLS:
            argument = _first_argument(words, index + 2, ("package",))
            if argument is not None and argument.text == "SparkR":
                if _call_mentions_runtime(words, index + 1):
                    found.append(Event("setup", path, token.line, "lib.loc"))
                found.append(Event("load", path, token.line, f"{token.text}(SparkR)"))
        elif token.text == "SparkR" and after is not None and after.text in ("::", ":::"):
            called = words[index + 2].text if index + 2 < len(words) else ""
            found.append(Event("load", path, token.line, f"SparkR{after.text}{called}"))
        elif calls and token.text in _SOURCE_CALLS:
            argument = _first_argument(words, index + 2, ("file", "uri"))
            if argument is not None and argument.kind == "string":
                found.append(Event("source", path, token.line, argument.text))
    return found


def _first_argument(words: list[Token], start: int, names: tuple[str, ...]) -> Token | None:
    """The first argument of a call whose ``(`` is just before ``start``, when it is a single
    name or string (``x``, ``"x"``, ``file = "x"``); ``None`` otherwise."""
    if (
        start + 2 < len(words)
        and words[start].kind == "name"
        and words[start].text in names
        and words[start + 1].text == "="
    ):
        start += 2
    if start + 1 >= len(words):
        return None
    token, following = words[start], words[start + 1]
    if token.kind in ("name", "string") and following.text in (",", ")"):
        return token
    return None


def _call_mentions_runtime(words: list[Token], opening: int) -> bool:
    """Whether the call whose ``(`` is at ``opening`` names the runtime's copy of SparkR in
    its arguments (``library(SparkR, lib.loc = "/databricks/spark/R/lib")``)."""
    depth = 0
    for token in words[opening:]:
        if token.kind == "op" and token.text == "(":
            depth += 1
        elif token.kind == "op" and token.text == ")":
            depth -= 1
            if depth == 0:
                return False
        elif token.kind == "string" and token.text.startswith(RUNTIME_SPARKR):
            return True
    return False


def scripts_run_by(command: str) -> Iterator[str]:
    """The R scripts a command runs, in order: ``Rscript FILE``, and the literal file of each
    ``source`` / ``mlflow_source`` call in ``Rscript -e EXPR``. Script names that are not
    literal (a placeholder, a variable) are left out."""
    for words in _shell.simple_commands(command):  # R_LIBS=... left out of `R_LIBS=... Rscript`
        if not words or Path(words[0]).name != "Rscript":
            continue
        arguments, expressions = iter(words[1:]), False
        for word in arguments:
            if word == "-e":  # then the words that follow are arguments, not a file
                expressions = True
                expression = next(arguments, "")
                yield from (e.text for e in events(Path(), expression) if e.kind == "source")
            elif not word.startswith("-"):
                if not expressions and not _NOT_LITERAL.search(word):
                    yield word
                break


def _read(project: Project, name: str) -> tuple[Path, str] | None:
    """The script ``name`` (relative to the project folder, where MLflow runs the command) and
    its text; ``None`` when the name is not literal, or names something outside the project,
    missing, unreadable or too large."""
    if not name or _NOT_LITERAL.search(name) or name.startswith("~"):
        return None
    root = _fs.resolved(project.directory)
    target = _fs.resolved(project.directory / name)
    if root is None or target is None or root not in target.parents:
        return None
    limit = _yaml.DEFAULT_LIMITS.max_bytes
    try:
        data = _yaml.read_head(target, limit)
    except (OSError, ValueError):
        return None
    if len(data) > limit:
        return None
    return project.directory / name, data.decode("utf-8", errors="replace")


def _script_events(project: Project, name: str) -> list[Event]:
    """The events of one script, with those of each file it ``source``s (one level deep)
    spliced in where the call is."""
    read = _read(project, name)
    if read is None:
        return []
    found: list[Event] = []
    for event in events(*read):
        if event.kind == "source":
            nested = _read(project, event.text)
            if nested is not None:
                found.extend(e for e in events(*nested) if e.kind != "source")
        else:
            found.append(event)
    return found


def sparkr_problem(project: Project, entry: EntryPoint) -> Problem | None:
    """MLP712: the first load of SparkR, in the R scripts the entry point's command runs (in
    order: an install by an earlier script stays installed), with no mention of the runtime's
    copy of SparkR before it.

    ``require(SparkR)`` returns ``FALSE`` where ``library`` fails, so ``if (!require(SparkR))
    install.packages(...)`` is fine: a ``require`` counts only if no mention follows it before
    the next load.
    """
    command = entry.command
    if not isinstance(command, str) or "Rscript" not in command or RUNTIME_SPARKR in command:
        return None
    required: Event | None = None
    for event in (e for name in scripts_run_by(command) for e in _script_events(project, name)):
        if event.kind == "setup":
            return None
        if event.kind == "load" and event.text.startswith("require("):
            required = required or event
        elif event.kind == "load":
            return _problem(required or event, entry)
    return None if required is None else _problem(required, entry)


def _problem(load: Event, entry: EntryPoint) -> Problem:
    return Problem(
        load.path,
        load.line,
        "MLP712",
        f"`{load.text}` needs SparkR, which Databricks asks an MLflow project run to install "
        f"from the runtime's copy before loading it: add `{SNIPPET}` before this line",
        entry.name,
    )
