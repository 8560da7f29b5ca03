"""Code keys: a hash of the code that computes a result, not of the files it sits in.

``code_key(*roots)`` starts from named definitions (a function, a class, a
module-level constant, or a whole module) and collects, statically with ``ast``,
every package definition they reach: names bound by the module's top-level
``def``/``class``/assignments or by its imports from the package, attribute
access on imported package modules, class bases and whole class bodies,
decorators, defaults. Each definition is normalized (docstrings stripped,
comments gone by construction, formatting fixed by ``ast.unparse``) and the
sorted set of them is hashed without the module it lives in. So moving a helper
to another module, reformatting, or editing a docstring or comment keeps the key;
changing a computation reached from the roots (a loss term, a constant) changes it.

Conservative where static reading cannot tell: a name an imported package module
does not bind pulls in that whole module; an imported package module used as a
value pulls in the whole module; references outside the package (torch, numpy,
the standard library) are not followed, nor is this module (the hashing is not
what it hashes). Type annotations are hashed with their
definition but not followed. Dynamic dispatch is the caller's to name: a
registry lookup reaches every registered class unless the registry is ``cut``
and the class actually used is passed as a root.
"""

from __future__ import annotations

import ast
import hashlib
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import atm_repro

_PKG = Path(atm_repro.__file__).resolve().parent


@dataclass(frozen=True)
class _Import:
    """What an import binds: ``module`` itself, or its attribute ``name``."""

    module: str
    name: str | None = None


@dataclass(frozen=True)
class _Module:
    defs: dict[str, tuple[tuple[str, tuple], ...]]  # name -> (normalized text, references)
    imports: dict[str, _Import]  # package imports only


def code_key(*roots: object, cut: tuple[str, ...] = (), src: Path = _PKG) -> str:
    """``<version>+<hash>`` of the package code reachable from ``roots``.

    A root is a function or class object, ``"module"`` (all its top-level
    definitions) or ``"module:name"``. ``cut`` names (``"module:name"``) are
    neither hashed nor followed, e.g. a registry of variants whose member in use
    is a root itself. ``src`` is the package's source folder (its name is the
    package's); another tree is read without being imported.
    """
    texts = sorted({t for ts in definitions(*roots, cut=cut, src=src).values() for t in ts})
    digest = hashlib.sha256("\n\0".join(texts).encode()).hexdigest()
    return f"{atm_repro.__version__}+{digest[:12]}"


def definitions(*roots: object, cut: tuple[str, ...] = (), src: Path = _PKG
                ) -> dict[str, tuple[str, ...]]:
    """``"module:name"`` -> normalized source of each definition ``code_key``
    hashes (the package's ``__version__`` included); arguments as there."""
    walk = _Walk(src.name, Path(src))
    seen = {walk.named(c) for c in cut}
    for item in seen:
        if item[0] != "def":
            raise ValueError(f"cut {item[1]!r} names a module, not a definition")
    todo = [walk.named(r) if isinstance(r, str) else walk.object(r) for r in roots]
    todo.append(("def", src.name, "__version__"))
    out = {}
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        if item[0] == "module":
            todo.extend(("def", item[1], name) for name in walk.module(item[1]).defs)
            continue
        _, module, name = item
        found = walk.module(module).defs.get(name, ())
        out[f"{module}:{name}"] = tuple(text for text, _ in found)
        for _, refs in found:
            for ref in refs:
                todo.extend(walk.resolve(module, ref))
    return out


class _Walk:
    """Module lookup and name resolution for one ``code_key`` call."""

    def __init__(self, package: str, src: Path):
        self.package, self.src = package, src
        self.outside: dict[str, Path] = {}  # root modules that live outside the package
        self.read: dict[str, _Module] = {}

    def inside(self, module: str) -> bool:
        return module == self.package or module.startswith(self.package + ".")

    def path(self, module: str) -> Path | None:
        if not self.inside(module):
            return self.outside.get(module)
        base = self.src.joinpath(*module.split(".")[1:])
        for path in (base / "__init__.py", base.with_suffix(".py")):
            if path.is_file():
                return path
        return None

    def module(self, module: str) -> _Module:
        if module not in self.read:
            path = self.path(module)
            if path is None:
                raise ValueError(f"no source for module {module!r} under {self.src}")
            self.read[module] = _analyse(module, path.name == "__init__.py", path.read_text())
        return self.read[module]

    def named(self, spec: str) -> tuple:
        module, _, name = spec.partition(":")
        defs = self.module(module).defs
        if name and name not in defs:
            raise ValueError(f"{module!r} defines no {name!r}")
        return ("def", module, name) if name else ("module", module)

    def object(self, obj: object) -> tuple:
        module, name = obj.__module__, obj.__qualname__.split(".")[0]
        if not self.inside(module):
            file = getattr(sys.modules.get(module), "__file__", None)
            if file is None:
                raise ValueError(f"{obj!r}: no source file to hash")
            self.outside[module] = Path(file)
        return self.named(f"{module}:{name}")

    def resolve(self, module: str, ref: tuple) -> set[tuple]:
        """Items that ``ref`` (a name chain, possibly through a local import) reaches."""
        chain, local = ref
        if local is not None:
            return self.lookup(local.module, [local.name, *chain[1:]] if local.name else chain[1:])
        info = self.module(module)
        if chain[0] not in info.defs and chain[0] not in info.imports:
            return set()  # a builtin or a local variable
        return self.lookup(module, list(chain))

    def lookup(self, module: str, chain: list[str], depth: int = 0) -> set[tuple]:
        """Items that ``module.<chain>`` reaches: a definition (the rest of the
        chain is an attribute of it), or a whole module."""
        if not self.inside(module) or module == __name__:
            return set()  # outside the package, or this hashing itself
        if not chain or depth > 50:
            return {("module", module)}
        head, rest = chain[0], chain[1:]
        info = self.module(module)
        out = {("def", module, head)} if head in info.defs else set()
        imp = info.imports.get(head)
        if imp is not None:
            out |= self.lookup(imp.module, [imp.name, *rest] if imp.name else rest, depth + 1)
        if out:
            return out
        if self.path(f"{module}.{head}") is not None:
            return self.lookup(f"{module}.{head}", rest, depth + 1)
        return {("module", module)}  # bound dynamically: take it all


@lru_cache(maxsize=512)
def _analyse(module: str, is_package: bool, source: str) -> _Module:
    """Top-level definitions of a module (normalized text and references) and its
    package imports. Cached by source text, so an edited file is read afresh."""
    package = module.split(".")[0]
    tree = ast.parse(source)
    _strip_docstrings(tree)
    imports: dict[str, _Import] = {}
    bound: dict[str, list[ast.stmt]] = {}
    for stmt in _top_level(tree.body):
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            imports.update(_bindings(stmt, module, is_package, package))
        else:
            for name in _names_of(stmt):
                bound.setdefault(name, []).append(stmt)
    defs = {}
    for name, stmts in bound.items():
        defs[name] = tuple((ast.unparse(s), _references(s, module, is_package, package))
                           for s in stmts)
    return _Module(defs, imports)


def _top_level(body: list[ast.stmt]):
    """Top-level statements, looking into ``if``/``try`` blocks (``TYPE_CHECKING``,
    optional imports) but not into ``if __name__ == "__main__"``."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            if "__main__" in ast.unparse(stmt.test):
                continue
            yield from _top_level(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _top_level(stmt.body + stmt.orelse + stmt.finalbody
                                  + [s for h in stmt.handlers for s in h.body])
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            yield stmt


def _names_of(stmt: ast.stmt) -> list[str]:
    """Module-level names a statement defines or changes: ``X`` of ``X = ...``,
    ``X[k] = ...``, ``X.update(...)``, ``register(...)``; every name it uses if it
    is another kind of statement (a loop, a ``with``)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return [name for t in targets for name in _target_names(t)]
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        return _target_names(stmt.value.func)
    return [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)]


def _target_names(node: ast.expr) -> list[str]:
    """The names an assignment target binds or changes (``a, X[k], Y.z`` -> a, X, Y)."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return [name for elt in node.elts for name in _target_names(elt)]
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return [node.id] if isinstance(node, ast.Name) else []


def _bindings(stmt: ast.Import | ast.ImportFrom, module: str, is_package: bool,
              package: str) -> dict[str, _Import]:
    """Names a package import binds (other imports bind nothing we follow)."""
    out = {}
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.name.split(".")[0] == package:
                if alias.asname:
                    out[alias.asname] = _Import(alias.name)
                else:
                    out[package] = _Import(package)
        return out
    base = stmt.module or ""
    if stmt.level:
        parts = module.split(".")[: len(module.split(".")) - stmt.level + is_package]
        base = ".".join(parts + ([base] if base else []))
    if base.split(".")[0] == package:
        for alias in stmt.names:
            if alias.name == "*":
                raise ValueError(f"{module}: star import from {base} cannot be hashed")
            out[alias.asname or alias.name] = _Import(base, alias.name)
    return out


def _strip_docstrings(tree: ast.Module) -> None:
    """Drop every function's and class's docstring (``ast.unparse`` then gives the
    code without docstrings, comments or layout)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def _references(stmt: ast.stmt, module: str, is_package: bool, package: str) -> tuple:
    """(name chain, local package import or None) of every name the statement
    uses outside annotations, e.g. (("io", "load_sae"), None) for ``io.load_sae(...)``."""
    local: dict[str, _Import] = {}
    for node in ast.walk(stmt):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            local.update(_bindings(node, module, is_package, package))
    skip = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.arg) and node.annotation is not None:
            skip.add(id(node.annotation))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            skip.add(id(node.returns))
        elif isinstance(node, ast.AnnAssign):
            skip.add(id(node.annotation))
    refs = set()

    def visit(node: ast.AST) -> None:
        if id(node) in skip:
            return
        if isinstance(node, (ast.Attribute, ast.Name)):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name):
                chain.append(node.id)
                refs.add((tuple(reversed(chain)), local.get(node.id)))
                return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(stmt)
    return tuple(sorted(refs, key=repr))
