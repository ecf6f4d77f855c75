"""The house rules CI keeps (CONTRIBUTING.md, "Layout and conventions"): no import circle between
the crate's modules, and no Rust file over 700 lines. Prints each breach; exits 1 if any.

Import circles are the strongly connected components of the graph "module A names module B".

A module is a file under src/ (`src/controller/lock.rs` and `src/controller/lock/tests.rs` are
`controller::lock` and `controller::lock::tests`). An edge A → B is a `crate::b…` or
`super::b…` path in A's code (comments and string literals aside) naming B or an item of B.
Tests modules (`…::tests`, `#[cfg(test)]` files) are left out: they may name whatever they test.
"""

import os
import re
import sys

MAX_LINES = 700


def module_of(path):
    rel = os.path.relpath(path, "src")[: -len(".rs")]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def code(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def main():
    modules = {}
    for root, _, files in os.walk("src"):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(root, f)
                modules[tuple(module_of(p))] = p
    known = set(modules)
    edges = {m: set() for m in known if "tests" not in m}

    def resolve(base):
        # The longest known module that is a prefix of `base`.
        for n in range(len(base), 0, -1):
            if tuple(base[:n]) in known:
                return tuple(base[:n])
        return None

    for m in edges:
        text = code(open(modules[m]).read())
        # Paths in `use a::{b, c::d}` groups are expanded one level, enough for this crate.
        for prefix, group in re.findall(r"\b((?:crate|super)(?:::\w+)*)::\{([^}]*)\}", text):
            for name in re.findall(r"\b(\w+)", group):
                text += f" {prefix}::{name} "
        for path in re.findall(r"\b((?:crate|super)(?:::\w+)+)", text):
            segs = path.split("::")
            if segs[0] == "crate":
                base = segs[1:]
            else:
                # `super` is m's parent, `super::super` its parent's parent…
                i = 0
                while i < len(segs) and segs[i] == "super":
                    i += 1
                base = list(m)[: len(m) - i] + segs[i:]
            target = resolve(base)
            if target and target != m and "tests" not in target and not (
                len(target) < len(m) and m[: len(target)] == target
            ):
                edges[m].add(target)

    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted("::".join(s) for s in scc))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    for scc in sorted(sccs):
        print("circle:", " ↔ ".join(scc))
    print(f"{len(sccs)} import circle(s) among {len(edges)} modules")
    long = []
    for top in ("src", "tests", "benches"):
        for root, _, files in os.walk(top):
            for f in files:
                if f.endswith(".rs"):
                    p = os.path.join(root, f)
                    n = sum(1 for _ in open(p))
                    if n > MAX_LINES:
                        long.append((n, p))
    for n, p in sorted(long, reverse=True):
        print(f"over {MAX_LINES} lines: {p} ({n})")
    print(f"{len(long)} file(s) over {MAX_LINES} lines")
    return 1 if sccs or long else 0


sys.exit(main())
