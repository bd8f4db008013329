"""Strict JSON for every JSON document sam2s reads from outside: prompts files, batch manifests, the
headers of the tracking server's binary messages.

Python's ``json.loads`` lets through what a hostile or broken file can use to crash a reader
later: ``NaN`` / ``Infinity`` (not JSON, RFC 8259 section 6), float literals that overflow to
infinity (``1e999``), integers of any length (an integer of 2**1024 or more overflows when made a
float, and one of more than 4,300 digits makes ``json.loads`` itself raise a bare ``ValueError``:
CPython's ``sys.set_int_max_str_digits`` limit, CVE-2020-10735), and nesting deep enough to raise
``RecursionError``. :func:`loads` refuses all of them with one :class:`StrictJSONError` (a
``ValueError``) whose message names the problem and where it is.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "StrictJSONError", "loads"]

MAX_INT_DIGITS = 19
"""Most digits of an integer literal (without its sign): every int64 fits (2**63 - 1 has 19)."""

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (a prompts file needs 5 levels, a manifest 2)."""


class StrictJSONError(ValueError):
    """A document that is not strict JSON or exceeds the limits; ``lineno`` / ``colno`` (1-based)
    give the place when known, else 0."""

    def __init__(self, message: str, lineno: int = 0, colno: int = 0) -> None:
        super().__init__(message)
        self.lineno, self.colno = lineno, colno


def _place(text: str, literal: str) -> tuple[int, int]:
    """Line and column (1-based) of the first occurrence of ``literal`` in ``text``, else (0, 0)."""
    at = text.find(literal)
    if at < 0:
        return 0, 0
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


def _where(lineno: int, colno: int) -> str:
    return f" at line {lineno}, column {colno}" if lineno else ""


def _depth_ok(value: Any) -> bool:
    """Whether ``value``'s arrays and objects nest at most ``MAX_DEPTH`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def loads(text: str | bytes | bytearray) -> Any:
    """Parse strict JSON (RFC 8259) within the limits above.

    Args:
        text: the document (``bytes`` are decoded as UTF-8).

    Returns:
        The value, as ``json.loads`` gives it (dict, list, str, int, float, bool, None).

    Raises:
        StrictJSONError: not UTF-8; not valid JSON (with line and column); ``NaN``, ``Infinity`` or
            ``-Infinity``; a number literal that is not finite as a float (e.g. ``1e999``); an
            integer literal of more than ``MAX_INT_DIGITS`` digits; nesting deeper than
            ``MAX_DEPTH``.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise StrictJSONError(f"not UTF-8 text ({error})") from None

    def constant(name: str) -> Any:
        raise StrictJSONError(f"{name} is not a JSON number{_where(*_place(text, name))}; write a finite number")

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise StrictJSONError(
                f"the number {literal[:30]} is too large to be finite{_where(*_place(text, literal))}"
            )
        return value

    def integer(literal: str) -> int:
        if len(literal.lstrip("-")) > MAX_INT_DIGITS:
            shown = literal if len(literal) <= 30 else literal[:12] + "..." + literal[-6:]
            raise StrictJSONError(
                f"the integer {shown} has {len(literal.lstrip('-'))} digits{_where(*_place(text, literal))}; "
                f"at most {MAX_INT_DIGITS} are accepted"
            )
        return int(literal)

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number, parse_int=integer)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as error:
        raise StrictJSONError(
            f"not valid JSON{_where(error.lineno, error.colno)}: {error.msg}", error.lineno, error.colno
        ) from None
    except RecursionError:
        value = None
        deep = True
    except ValueError as error:  # e.g. a digit limit of the interpreter; not expected past integer()
        raise StrictJSONError(f"not valid JSON: {error}") from None
    else:
        deep = not _depth_ok(value)
    if deep:
        raise StrictJSONError(f"the JSON is nested more than {MAX_DEPTH} levels deep; check how the file was written")
    return value
