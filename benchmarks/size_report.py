"""Size and shape of the product code (issue 22, acceptance 3): lines, modules over 800 lines,
functions over 80 lines, and the duplicated runs over 10 lines that the ``duplicates`` tool finds.

Product code: every ``.py`` file under ``SAM2SSlicer/`` (the engine, the application library, the
Slicer module and effect), not ``Testing/``, ``benchmarks/`` or ``docs/``; lines as ``wc -l``
counts them (docstrings and comments included). Run ``python benchmarks/size_report.py [--base
REV]`` from the repository root; with ``--base`` the product lines of REV are printed beside.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = "SAM2SSlicer"
MODULE_LIMIT, FUNCTION_LIMIT, DUPLICATE_LIMIT = 800, 80, 10


def product_files() -> list[Path]:
    """The product's tracked and untracked (not ignored) ``.py`` files, sorted."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", f"{PRODUCT}/*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(ROOT / p for p in listed if (ROOT / p).is_file())


def lines_at(rev: str) -> int:
    """Product lines at git revision ``rev``."""
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", PRODUCT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    total = 0
    for name in (n for n in names if n.endswith(".py")):
        text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, check=True).stdout
        total += text.count(b"\n")
    return total


def long_functions(path: Path) -> list[tuple[str, int]]:
    """``(qualified name, lines)`` of the functions of ``path`` longer than ``FUNCTION_LIMIT`` lines
    (from ``def`` to the last line of the body, nested functions counted in their parent too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    size = child.end_lineno - child.lineno + 1
                    if size > FUNCTION_LIMIT:
                        found.append((name, size))
                visit(child, name + ".")

    visit(tree, "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also print the product lines of this git revision")
    args = parser.parse_args()
    files = product_files()
    sizes = {p: p.read_bytes().count(b"\n") for p in files}
    total = sum(sizes.values())
    print(f"product lines: {total:,} in {len(files)} files")
    if args.base:
        base = lines_at(args.base)
        print(f"product lines at {args.base}: {base:,}; now {100 * (total - base) / base:+.1f}%")
    big = sorted(((n, p) for p, n in sizes.items() if n > MODULE_LIMIT), reverse=True)
    print(f"modules over {MODULE_LIMIT} lines: {len(big)}")
    for n, p in big:
        print(f"  {n:6,}  {p.relative_to(ROOT)}")
    functions = sorted(
        ((n, f"{p.relative_to(ROOT)}:{name}") for p in files for name, n in long_functions(p)), reverse=True
    )
    print(f"functions over {FUNCTION_LIMIT} lines: {len(functions)}")
    for n, where in functions:
        print(f"  {n:6}  {where}")
    tool = shutil.which("duplicates")
    if tool is None:
        print("duplicates: the tool is not on PATH here (not checked)")
        return 0
    out = subprocess.run(
        [tool, "--repo", str(ROOT / PRODUCT), "--min-lines", str(DUPLICATE_LIMIT + 1), "--most", "50", "--seconds", "120"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    print(f"duplicates over {DUPLICATE_LIMIT} lines in product code (the duplicates tool):")
    print("  " + "\n  ".join(out.strip().splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
