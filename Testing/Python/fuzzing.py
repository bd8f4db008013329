"""Shared parts of the property-based fuzz tests (hypothesis; README "Fuzzing").

Every fuzz property (module marked ``pytest.mark.fuzz``) asserts that each generated input either
parses or raises the documented error class, never another exception, a hang (hypothesis'
per-example deadline) or a crash. Inputs come from three kinds of strategy here: random JSON
(:data:`json_values`), near-valid mutations of a real document (:func:`mutated_json`) and raw-text
mutations of its serialised form (:func:`mutated_text`).

Profiles (registered in ``conftest.py``): ``default`` runs ``DEFAULT_EXAMPLES`` examples per
property, derandomized (the same inputs on every run: ``make test`` and ``make test-fast``);
``fuzz`` (``make fuzz``) runs ``FUZZ_EXAMPLES`` random ones per property. :func:`counted` counts
the examples each property ran; ``conftest.py`` prints the counts at the end and, under the
``fuzz`` profile, fails the run when a property ran fewer than ``FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import collections
import copy
import functools
import json
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DEFAULT_EXAMPLES = 30
FUZZ_EXAMPLES = 10_000
EXAMPLES: collections.Counter[str] = collections.Counter()
"""Examples run per property (``module::function``), filled by :func:`counted`."""


def register_profiles() -> None:
    """The ``default`` and ``fuzz`` hypothesis profiles (see the module docstring)."""
    common = dict(
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        deadline=timedelta(seconds=10),  # a hang, not a slow example on a busy shared machine
        print_blob=True,
    )
    settings.register_profile("default", max_examples=DEFAULT_EXAMPLES, derandomize=True, **common)
    settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, **common)
    settings.load_profile("default")


def counted(test):
    """Decorate a property (below ``@given``) to count the examples it runs into :data:`EXAMPLES`."""
    key = f"{test.__module__}::{test.__name__}"

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        EXAMPLES[key] += 1
        return test(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ strategies
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
"""Random JSON values (any structure, numbers up to 2**70 in size)."""

_odd_numbers = st.sampled_from(
    [-1, 0, 1, 2**31, 2**63, 2**1024, 10**400, -(2**1024), 1e308, -0.0, 0.5, 1e-300, float("nan"), float("inf")]
)
_replacements = _odd_numbers | json_values | st.sampled_from(["", "x", [], {}, [[]], [[1, 2]], True, None])


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in ``doc`` (a path of keys / indices), the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _apply(doc: Any, path: tuple, action: str, value: Any, key: str) -> Any:
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[key] = value
    elif action == "add":
        parent.insert(last, value)
    return doc


@st.composite
def mutated_json(draw, document: Any, max_mutations: int = 3) -> Any:
    """``document`` (a JSON value) with 1 to ``max_mutations`` random changes: a value replaced by
    an odd number or random JSON, a key or item deleted, a key or item added."""
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, max_mutations))):
        places = _paths(doc)
        path = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        value = copy.deepcopy(draw(_replacements))  # never the strategy's own object: later edits change it
        doc = _apply(doc, path, action, value, draw(st.text(max_size=8)))
    return doc


_snippets = st.sampled_from(
    [
        "",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        '"',
        "\\",
        "-",
        "0",
        "1e999",
        "NaN",
        "Infinity",
        "9" * 5000,
        "[" * 200,
        "\x00",
        "\ufeff",
    ]
)


@st.composite
def mutated_text(draw, text: str, max_mutations: int = 3) -> str:
    """``text`` with 1 to ``max_mutations`` raw edits: a slice deleted, a random or odd snippet
    inserted, a character replaced, or the text truncated."""
    for _ in range(draw(st.integers(1, max_mutations))):
        n = len(text)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 20)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
        piece = draw(_snippets | st.text(max_size=5))
        if action == "delete":
            text = text[:i] + text[j:]
        elif action == "insert":
            text = text[:i] + piece + text[i:]
        elif action == "replace":
            text = text[:i] + piece + text[j:]
        else:
            text = text[:i]
    return text
