#!/usr/bin/env python3
"""Fails when two files of one crate import each other, directly or in a circle.

Imports point one way (STYLE.md): a file names what is defined in files below it, never the
other way, so each file can be read, tested and changed knowing only what is beneath it. A file
A imports a file B when A's code (not its `#[cfg(test)]` module) names a path into B's module:
`use crate::x::Y`, `use super::{x, y::Z}`, or a path such as `super::x::f(...)` in the code.
A module's file is `x.rs` or `x/mod.rs`; `lib.rs`/`main.rs` is the crate's root, whose `mod`
declarations are not imports.

Usage: scripts/check-circles.py [CRATE_SRC_DIR...]   (default: every crate of the workspace)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["shared/src", "installer/src", "client/src", "device/src", "desktop/src",
          "management-point/src"]
PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
USE = re.compile(r"\buse\s+((?:crate|super|self)\b[^;]*);", re.S)


def strip(text):
    """The code without comments, string literals and the trailing test module."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"', '""', text)
    cut = re.search(r"#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+", text)
    return text[: cut.start()] if cut else text


def expand(tree):
    """Paths of a use tree: `super::{a, b::{C, D}}` -> super::a, super::b::C, super::b::D."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree.split(" as ")[0]]
    head, _, rest = tree.partition("{")
    body = rest[: rest.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in filter(None, parts):
        for sub in expand(p):
            out.append(head + sub if sub != "self" else head.rstrip(":"))
    return out


def modules(src):
    """Module path (tuple) -> file, for every file of the crate (bins left out)."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        if rel.parts[0] == "bin":
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts.pop()
        mods[tuple(parts)] = f
    return mods


def resolve(mods, here, path):
    """The module a path names from module `here`, as far as its segments are modules."""
    segs = path.split("::")
    if segs[0] == "crate":
        cur = ()
    elif segs[0] == "self":
        cur = here
    else:
        cur = here
        while segs and segs[0] == "super":
            cur = cur[:-1]
            segs = segs[1:]
        segs = ["super"] + segs
    for s in segs[1:]:
        if cur + (s,) in mods:
            cur = cur + (s,)
        else:
            break
    return cur


def edges(src):
    mods = modules(src)
    out = {}
    for here, f in mods.items():
        code = strip(f.read_text())
        paths = [p for m in USE.finditer(code) for p in expand(m.group(1))]
        paths += [m.group(1) + m.group(2) for m in PATH.finditer(code)]
        targets = set()
        for p in paths:
            to = resolve(mods, here, p)
            # A module's own file and the crate root (`mod` lists, re-exports) are not imports.
            if to != here and to != () and to in mods:
                targets.add(mods[to])
        out[f] = targets
    return out


def circles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    dirs = sys.argv[1:] or CRATES
    bad = 0
    for d in dirs:
        src = (ROOT / d).resolve()
        graph = edges(src)
        for comp in circles(graph):
            bad += 1
            files = sorted(str(f.relative_to(ROOT)) for f in comp)
            print(f"circle of imports: {', '.join(files)}")
            for f in sorted(comp):
                for t in sorted(graph[f] & set(comp)):
                    print(f"  {f.relative_to(ROOT)} -> {t.relative_to(ROOT)}")
    if bad:
        print(f"{bad} circle(s): move what both sides use to a file below them (STYLE.md)")
        return 1
    print(f"no circles of imports in {len(dirs)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
