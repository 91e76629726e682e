"""Mutants of a Python source file: small deliberate bugs, each a one-spot edit of the text.

A mutant is the file with one node of its syntax tree changed the way a slip of the pen would change
it: an operator swapped, a term dropped, a constant nudged, an in-place statement deleted, or an
output buffer aliased to an input. A test suite that trusts a gradient should fail on nearly every
one of them; run.py runs the suite against each and counts.

Each mutant is named by a key that does not depend on line numbers, so a reviewed list of equivalent
mutants (equivalent.md) survives edits elsewhere in the file:

    layers.py:relu_backward:binop:'dy * mask'->'dy / mask'#0

file, enclosing function (Class.method), operator, the source text before and after, and the count
of identical (function, before, after) mutants earlier in the file.

What is not mutated, and why:
- docstrings and other strings, except workspace buffer names (a wrong name aliases two buffers);
- guard clauses (`if ...: raise`) and functions named check_*: input checking, not math, and tested
  through the command line by test_nothing_lost.py, which the in-process coverage here cannot see;
- annotations, imports, and names listed in SKIP by the caller (code that only runs on CuPy).
"""
from __future__ import annotations

import ast
import hashlib
from typing import NamedTuple

# Buffer names are the string argument at this position of these calls: buffer(ws, NAME, shape),
# ws.get(NAME, shape).
BUFFER_CALLS = {"buffer": 1, "get": 0}

# Arguments that are never arrays, so never an output to alias: the array namespace.
NOT_ARRAYS = {"xp", "np", "cupy", "self"}

SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
              ast.Pow: ast.Mult, ast.FloorDiv: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
SWAP_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAP_BOOLOP = {ast.And: ast.Or, ast.Or: ast.And}


class Mutant(NamedTuple):
    key: str            # stable name, see the module docstring
    file: str           # the file's name, as the caller gave it
    function: str       # enclosing Class.method, or "<module>"
    operator: str       # binop, drop, unary, compare, boolop, constant, statement, buffer, alias
    line: int           # 1-based, for people; never part of the key
    span: tuple         # (first, last) line of the changed text
    fallback: tuple     # lines whose tests also count when none runs `span` (a default value runs at
                        # import: its function's body), or None
    before: str         # the source text replaced ...
    after: str          # ... and what replaces it
    source: str         # the whole mutated file


def _offsets(source):
    """Start offset of each line, so (line, col) from the ast becomes an index into the text."""
    starts, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def _is_guard(node):
    """An `if` whose body only raises: input checking."""
    return isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse


class _Collector(ast.NodeVisitor):
    """Walks the tree and records (node, operator, replacement text) for each possible mutation."""

    def __init__(self, source, skip, partners):
        self.source, self.skip, self.partners = source, skip, partners
        self.scope, self.edits = [], []
        self.lines = len(source.splitlines())
        self.fallback = (1, self.lines)           # module and class level: run at import

    # -- where we are -------------------------------------------------------------------------
    def _function(self):
        return ".".join(self.scope) or "<module>"

    def _skipped(self):
        return any(name in self.skip or name.startswith("check_") for name in self.scope) \
            or ".".join(self.scope) in self.skip

    def _add(self, node, operator, replacement):
        if not self._skipped():
            self.edits.append((node, operator, replacement, self._function(), self.fallback))

    def _scoped(self, node):
        self.scope.append(node.name)
        outer = self.fallback
        if not isinstance(node, ast.ClassDef):
            # default values are code too (Adam's lr=1e-3), run once at import: the tests that
            # count for them are those that run the function's body
            self.fallback = (node.body[0].lineno, node.end_lineno)
            self.visit(node.args)
        for decorator in node.decorator_list:
            self.visit(decorator)
        self.fallback = None if not isinstance(node, ast.ClassDef) else outer
        for statement in node.body:
            self.visit(statement)
        self.fallback = outer
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    # -- what is never mutated ---------------------------------------------------------------------
    def visit_If(self, node):
        if not _is_guard(node):
            self.generic_visit(node)

    def visit_Raise(self, node):
        pass

    def visit_Assert(self, node):
        pass

    def visit_JoinedStr(self, node):
        pass

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node):
        pass

    visit_ImportFrom = visit_Import

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant):     # a docstring
            return
        if isinstance(node.value, ast.Call):         # an in-place call: xp.multiply(a, b, out=c)
            self._add(node, "statement", "pass")
        self.generic_visit(node)

    # -- what is ---------------------------------------------------------------------------------
    def visit_AugAssign(self, node):
        swapped = SWAP_BINOP.get(type(node.op))
        if swapped:
            self._add(node, "binop", ast.unparse(ast.AugAssign(node.target, swapped(), node.value)))
        self._add(node, "statement", "pass")
        self.generic_visit(node)

    def visit_BinOp(self, node):
        swapped = SWAP_BINOP.get(type(node.op))
        if swapped:
            self._add(node, "binop", _paren(ast.BinOp(node.left, swapped(), node.right)))
        if isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
            self._add(node, "drop", _paren(node.left))          # a - b -> a: the right term dropped
        if isinstance(node.op, (ast.Add, ast.Mult)):
            self._add(node, "drop", _paren(node.right))         # a + b -> b
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.USub, ast.Not)):
            self._add(node, "unary", _paren(node.operand))
        self.generic_visit(node)

    def visit_Compare(self, node):
        for i, op in enumerate(node.ops):
            swapped = SWAP_COMPARE.get(type(op))
            if swapped:
                ops = list(node.ops)
                ops[i] = swapped()
                self._add(node, "compare", _paren(ast.Compare(node.left, ops, node.comparators)))
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        self._add(node, "boolop", _paren(ast.BoolOp(SWAP_BOOLOP[type(node.op)](), node.values)))
        self.generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            self._add(node, "constant", repr(not value))
        elif isinstance(value, int):
            self._add(node, "constant", repr(value + 1))
        elif isinstance(value, float):
            self._add(node, "constant", repr(value * 2 if value else 1.0))

    def visit_Call(self, node):
        arg = _buffer_name(node)
        if arg is not None and arg.value in self.partners:
            # the name of another buffer requested with the same shape and dtype: the two then share memory
            self._add(arg, "buffer", repr(self.partners[arg.value]))
        for keyword in node.keywords:
            if keyword.arg == "out":
                # write the result over an input of the same call
                for arg in node.args:
                    if isinstance(arg, ast.Name) and arg.id not in NOT_ARRAYS \
                            and ast.unparse(arg) != ast.unparse(keyword.value):
                        self._add(keyword.value, "alias", arg.id)
                        break
        self.generic_visit(node)


def _paren(node):
    return "(" + ast.unparse(node) + ")"


def _buffer_name(call):
    """The literal buffer name a call asks its workspace for, as an ast.Constant, or None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    position = BUFFER_CALLS.get(name)
    if position is None or len(call.args) <= position:
        return None
    arg = call.args[position]
    return arg if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def buffer_names(source):
    """Every literal buffer name in the file, in order of first appearance."""
    names = []
    for node in ast.walk(ast.parse(source)):
        arg = _buffer_name(node) if isinstance(node, ast.Call) else None
        if arg is not None and arg.value not in names:
            names.append(arg.value)
    return names


def buffer_partners(names, requests):
    """For each name, the next name in `names` (cyclically) ever requested with a (shape, dtype) it was.

    requests: name -> set of (shape, dtype) seen at run time (run.py records them). Swapping a name for
    a partner makes one workspace buffer serve two arrays; a partner of another shape would only get
    a buffer of its own, a mutant no test could kill.
    """
    partners = {}
    for i, name in enumerate(names):
        for other in names[i + 1:] + names[:i]:
            if requests.get(name, set()) & requests.get(other, set()):
                partners[name] = other
                break
    return partners


def mutants(source, file, skip=(), partners=None):
    """Every mutant of `source` (the text of `file`), in source order, without duplicates.

    skip: function names (or Class.method) left alone. partners: buffer name -> the name to swap it
    for (buffer_partners); without it, no buffer mutants.
    """
    tree = ast.parse(source)
    collector = _Collector(source, set(skip), partners or {})
    collector.visit(tree)
    starts = _offsets(source)
    seen_sources, seen_keys, result = {hashlib.sha1(source.encode()).digest()}, {}, []
    for node, operator, replacement, function, fallback in collector.edits:
        begin = starts[node.lineno - 1] + node.col_offset
        end = starts[node.end_lineno - 1] + node.end_col_offset
        before = source[begin:end]
        mutated = source[:begin] + replacement + source[end:]
        digest = hashlib.sha1(mutated.encode()).digest()
        if digest in seen_sources or replacement == before:
            continue
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        seen_sources.add(digest)
        after = replacement
        base = f"{file}:{function}:{operator}:{_short(before)!r}->{_short(after)!r}"
        count = seen_keys.get(base, 0)
        seen_keys[base] = count + 1
        result.append(Mutant(f"{base}#{count}", file, function, operator, node.lineno,
                             (node.lineno, node.end_lineno), fallback, before, after, mutated))
    result.sort(key=lambda m: m.line)
    return result


def _short(text, limit=60):
    """One line, at most `limit` characters: enough to recognise the spot in a key."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
