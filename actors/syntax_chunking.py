"""Plan chunks along a source file's syntax tree: one span per function, method or class.

:func:`plan_spans` parses a file with its tree-sitter grammar and returns line spans that
:mod:`actors.chunking` turns into chunks. A definition that fits the size limits is one span; a class
(impl block, namespace, module...) too big for one chunk is opened and planned member by member; any
other oversized definition is one span marked ``fits=False``, which the caller splits into overlapping
line windows that keep the definition's name. Consecutive small definitions and the module-level code
between definitions are merged up to the limits, so a file of one-liners does not turn into hundreds of
two-line chunks. Every non-blank line of the file lies in some span. Definitions that tree-sitter could
not parse are planned as plain code; a file more than half unparsable is left to the caller's windows.

Grammars come from the official per-language wheels on PyPI (``tree-sitter-python``...). Languages
are built once per process, parsers once per thread (a tree-sitter parser is not thread safe and
``read_and_chunk`` runs in worker threads).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import tree_sitter

logger = logging.getLogger(__name__)

#: Separates the parts of a header: ``pkg/parser.py · class Parser · def parse``.
HEADER_SEPARATOR = " · "


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of one chunk (the ``chunk_*`` settings)."""

    window: int  # lines
    overlap: int  # lines shared by consecutive windows of one split definition
    max_chars: int


@dataclass(frozen=True, slots=True)
class Span:
    """Lines ``start_line..end_line`` (1-based, inclusive) that make one chunk, or several if not ``fits``."""

    start_line: int
    end_line: int
    symbol: str | None  # qualified name(s): "Parser.parse", or "a, b" for merged small definitions
    header: str  # "pkg/parser.py · class Parser · def parse"
    fits: bool  # False: larger than the limits, to be cut into line windows


@dataclass(frozen=True, slots=True)
class _Grammar:
    module: str  # the PyPI wheel's import name
    function: str  # its function returning the language pointer
    definitions: Mapping[str, str]  # node type -> label shown in headers ("def", "class", "fn"...)
    containers: frozenset[str] = frozenset()  # definitions whose body holds more definitions
    wrappers: frozenset[str] = frozenset()  # decorators, export, template<>: span of the wrapper, name inside
    transparent: frozenset[str] = frozenset()  # #ifdef, extern "C": their children count as siblings
    attached: frozenset[str] = frozenset({"comment"})  # comments/attributes glued to the next definition


_C_DEFINITIONS = {
    "function_definition": "function",
    "struct_specifier": "struct",
    "union_specifier": "union",
    "enum_specifier": "enum",
    "type_definition": "typedef",
}
_C_TRANSPARENT = frozenset({"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"})
_JS_DEFINITIONS = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "method_definition": "method",
    "lexical_declaration": "function",  # only when it binds a function: const f = () => {}
    "variable_declaration": "function",
}
_TS_DEFINITIONS = {
    **_JS_DEFINITIONS,
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
    "internal_module": "namespace",
    "module": "module",
}
_TS_CONTAINERS = frozenset(
    {"class_declaration", "abstract_class_declaration", "interface_declaration", "internal_module", "module"}
)
# expression_statement: how the TypeScript grammar wraps `namespace X {}`.
_TS_WRAPPERS = frozenset({"export_statement", "expression_statement", "ambient_declaration"})

_GRAMMARS: dict[str, _Grammar] = {
    "python": _Grammar(
        "tree_sitter_python",
        "language",
        {"function_definition": "def", "class_definition": "class"},
        containers=frozenset({"class_definition"}),
        wrappers=frozenset({"decorated_definition"}),
    ),
    "javascript": _Grammar(
        "tree_sitter_javascript",
        "language",
        _JS_DEFINITIONS,
        containers=frozenset({"class_declaration"}),
        wrappers=frozenset({"export_statement"}),
    ),
    "typescript": _Grammar(
        "tree_sitter_typescript",
        "language_typescript",
        _TS_DEFINITIONS,
        containers=_TS_CONTAINERS,
        wrappers=_TS_WRAPPERS,
    ),
    "tsx": _Grammar(
        "tree_sitter_typescript", "language_tsx", _TS_DEFINITIONS, containers=_TS_CONTAINERS, wrappers=_TS_WRAPPERS
    ),
    "go": _Grammar(
        "tree_sitter_go",
        "language",
        {"function_declaration": "func", "method_declaration": "func", "type_declaration": "type"},
    ),
    "rust": _Grammar(
        "tree_sitter_rust",
        "language",
        {
            "function_item": "fn",
            "struct_item": "struct",
            "enum_item": "enum",
            "union_item": "union",
            "trait_item": "trait",
            "impl_item": "impl",
            "mod_item": "mod",
            "macro_definition": "macro_rules!",
        },
        containers=frozenset({"impl_item", "trait_item", "mod_item"}),
        attached=frozenset({"line_comment", "block_comment", "attribute_item"}),
    ),
    "java": _Grammar(
        "tree_sitter_java",
        "language",
        {
            "class_declaration": "class",
            "interface_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "record",
            "annotation_type_declaration": "@interface",
            "method_declaration": "method",
            "constructor_declaration": "constructor",
        },
        containers=frozenset(
            {
                "class_declaration",
                "interface_declaration",
                "enum_declaration",
                "record_declaration",
                "annotation_type_declaration",
            }
        ),
        transparent=frozenset({"enum_body_declarations"}),
        attached=frozenset({"line_comment", "block_comment"}),
    ),
    "c": _Grammar("tree_sitter_c", "language", _C_DEFINITIONS, transparent=_C_TRANSPARENT),
    "cpp": _Grammar(
        "tree_sitter_cpp",
        "language",
        {**_C_DEFINITIONS, "class_specifier": "class", "namespace_definition": "namespace"},
        containers=frozenset({"class_specifier", "struct_specifier", "union_specifier", "namespace_definition"}),
        wrappers=frozenset({"template_declaration"}),
        transparent=_C_TRANSPARENT | {"linkage_specification"},
    ),
    "ruby": _Grammar(
        "tree_sitter_ruby",
        "language",
        {"method": "def", "singleton_method": "def", "class": "class", "module": "module"},
        containers=frozenset({"class", "module"}),
    ),
    "csharp": _Grammar(
        "tree_sitter_c_sharp",
        "language",
        {
            "class_declaration": "class",
            "struct_declaration": "struct",
            "interface_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "record",
            "namespace_declaration": "namespace",
            "method_declaration": "method",
            "constructor_declaration": "constructor",
        },
        containers=frozenset(
            {
                "class_declaration",
                "struct_declaration",
                "interface_declaration",
                "record_declaration",
                "namespace_declaration",
            }
        ),
    ),
    "php": _Grammar(
        "tree_sitter_php",
        "language_php",
        {
            "function_definition": "function",
            "method_declaration": "function",
            "class_declaration": "class",
            "interface_declaration": "interface",
            "trait_declaration": "trait",
            "enum_declaration": "enum",
            "namespace_definition": "namespace",
        },
        containers=frozenset(
            {
                "class_declaration",
                "interface_declaration",
                "trait_declaration",
                "enum_declaration",
                "namespace_definition",
            }
        ),
    ),
}

#: Grammars to try, in order, for a language name of :func:`actors.scanning.language_of`. A ``.h`` file
#: may be C or C++; ``.tsx`` needs the TSX grammar (see :func:`grammars_for`).
_LANGUAGE_GRAMMARS: dict[str, tuple[str, ...]] = {name: (name,) for name in _GRAMMARS if name != "tsx"}

_JS_FUNCTION_VALUES = frozenset(
    {"arrow_function", "function_expression", "function", "generator_function", "class", "class_expression"}
)
# Where a C/C++ declarator chain ends in the declared name.
_C_NAME_TYPES = frozenset(
    {"identifier", "field_identifier", "qualified_identifier", "destructor_name", "operator_name", "type_identifier"}
)

_languages: dict[str, tree_sitter.Language] = {}
_languages_lock = threading.Lock()
_parsers = threading.local()


def supported_languages() -> frozenset[str]:
    """Language names (as :func:`actors.scanning.language_of` gives them) chunked along their syntax."""
    return frozenset(_LANGUAGE_GRAMMARS)


def grammars_for(path: str, language: str) -> tuple[str, ...]:
    """The grammars to try for ``path``, best first; empty when the language has none."""
    lowered = path.lower()
    if language == "typescript" and lowered.endswith(".tsx"):
        return ("tsx",)
    if language == "c" and lowered.endswith(".h"):
        return ("c", "cpp")  # C++ headers are often named .h
    return _LANGUAGE_GRAMMARS.get(language, ())


def _parser(grammar: str) -> tree_sitter.Parser:
    cache: dict[str, tree_sitter.Parser] | None = getattr(_parsers, "by_grammar", None)
    if cache is None:
        cache = _parsers.by_grammar = {}
    parser = cache.get(grammar)
    if parser is None:
        with _languages_lock:
            language = _languages.get(grammar)
            if language is None:
                spec = _GRAMMARS[grammar]
                pointer = getattr(importlib.import_module(spec.module), spec.function)()
                language = _languages[grammar] = tree_sitter.Language(pointer)
        parser = cache[grammar] = tree_sitter.Parser(language)
    return parser


@dataclass(frozen=True, slots=True)
class Parsed:
    grammar: str
    tree: tree_sitter.Tree
    error_lines: int  # lines of top-level code that tree-sitter could not parse


def parse(source: bytes, path: str, language: str) -> Parsed | None:
    """The tree of the first grammar that parses ``source`` cleanly, else the one with fewest error lines.

    None only when no grammar covers ``language``.
    """
    best: Parsed | None = None
    for name in grammars_for(path, language):
        tree = _parser(name).parse(source)
        if not tree.root_node.has_error:
            return Parsed(name, tree, 0)
        errors, counted_to = 0, -1
        for child in _scope_children(tree.root_node, _GRAMMARS[name]):
            if child.has_error:
                first, last = max(child.start_point.row, counted_to + 1), _end_row(child)
                errors += max(0, last - first + 1)
                counted_to = max(counted_to, last)
        if best is None or errors < best.error_lines:
            best = Parsed(name, tree, errors)
    return best


# --- finding definitions -------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    """A definition (with its attached comments) inside one scope, in 0-based rows."""

    start: int
    end: int
    node: tree_sitter.Node | None  # None once two definitions sharing a line were merged
    titles: list[str]  # "def parse"
    names: list[str]  # "parse"


def _text(node: tree_sitter.Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", errors="replace")


def _end_row(node: tree_sitter.Node) -> int:
    # Nodes that swallow their line break (preprocessor lines, Rust doc comments) end at column 0 of the next row.
    end = node.end_point
    return end.row - 1 if end.column == 0 and end.row > node.start_point.row else end.row


def _name(node: tree_sitter.Node) -> tuple[str, str] | None:
    """(name, title suffix) of a definition node; None if it is no definition after all."""
    kind = node.type
    if kind in ("lexical_declaration", "variable_declaration"):
        for declarator in node.named_children:
            value = declarator.child_by_field_name("value")
            if declarator.type == "variable_declarator" and value is not None and value.type in _JS_FUNCTION_VALUES:
                name = _text(declarator.child_by_field_name("name"))
                return (name, name) if name else None
        return None
    if kind == "type_declaration":  # Go: type X struct{...} or a parenthesised group of specs
        specs = [_text(spec.child_by_field_name("name")) for spec in node.named_children if spec.type == "type_spec"]
        specs = [spec for spec in specs if spec]
        return (specs[0], ", ".join(specs)) if specs else None
    if kind == "impl_item":  # Rust: impl [Trait for] Type
        implemented = node.child_by_field_name("type")
        if implemented is not None and implemented.type == "generic_type":
            implemented = implemented.child_by_field_name("type")
        name = _text(implemented)
        trait = _text(node.child_by_field_name("trait"))
        return (name, f"{trait} for {name}" if trait else name) if name else None
    if kind in ("function_definition", "type_definition") and node.child_by_field_name("name") is None:
        # C/C++: the name is deep in the declarator chain, as in `static int *make(int n)`.
        chain: tree_sitter.Node | None = node.child_by_field_name("declarator")
        while chain is not None and chain.type not in _C_NAME_TYPES:
            inner = chain.child_by_field_name("declarator")
            if inner is None:
                inner = next((c for c in chain.named_children if c.type in _C_NAME_TYPES), None)
            chain = inner
        name = _text(chain)
        return (name, name) if name else None
    name = _text(node.child_by_field_name("name"))
    if not name:
        return None
    receiver = node.child_by_field_name("receiver")  # Go methods: func (s *Server) Start()
    if receiver is not None:
        types = [c for c in receiver.named_children if c.type == "parameter_declaration"]
        owner = _text(types[0].child_by_field_name("type")).lstrip("*").split("[")[0] if types else ""
        if owner:
            return f"{owner}.{name}", f"({owner}) {name}"
    return name, name


def _body(node: tree_sitter.Node) -> tree_sitter.Node | None:
    return node.child_by_field_name("body")


def _scope_children(node: tree_sitter.Node, grammar: _Grammar) -> Iterator[tree_sitter.Node]:
    """The named children of a scope, with its body and any transparent wrappers opened in place."""
    body = _body(node)
    for child in node.named_children:
        if child.type in grammar.transparent or (body is not None and child == body):
            yield from _scope_children(child, grammar)
        else:
            yield child


def _definition(node: tree_sitter.Node, grammar: _Grammar) -> tree_sitter.Node | None:
    """The definition ``node`` is or wraps, or None."""
    if node.type in grammar.wrappers:
        inner = node.child_by_field_name("definition") or node.child_by_field_name("declaration")
        if inner is None:
            inner = next((c for c in node.named_children if c.type in grammar.definitions), None)
        return _definition(inner, grammar) if inner is not None else None
    if node.type not in grammar.definitions:
        return None
    if node.type in grammar.containers and _body(node) is None:
        return None  # a declaration such as `class Foo;` or `mod tests;`
    return node


def _units(scope: tree_sitter.Node, grammar: _Grammar, first: int, last: int) -> list[_Unit]:
    """Definitions directly inside ``scope`` (rows ``first..last``), in order, not overlapping."""
    units: list[_Unit] = []
    attached_start: int | None = None
    attached_end = -2
    for child in _scope_children(scope, grammar):
        start, end = child.start_point.row, _end_row(child)
        if child.type in grammar.attached:
            if attached_start is None or start > attached_end + 1:
                attached_start = start
            attached_end = max(attached_end, end)
            continue
        definition = _definition(child, grammar)
        if definition is not None and child.has_error and definition.type not in grammar.containers:
            definition = None  # a definition tree-sitter could not parse is plain code (line windows)
        named = _name(definition) if definition is not None else None
        if definition is None or named is None:
            attached_start = None
            continue
        if attached_start is not None and start <= attached_end + 1:
            start = attached_start
        attached_start = None
        start, end = max(start, first), min(end, last)
        label = grammar.definitions[definition.type]
        name, suffix = named
        if units and start <= units[-1].end:
            # Two definitions on one line (minified code): one unit, no longer opened as a container.
            previous = units[-1]
            previous.end = max(previous.end, end)
            previous.node = None
            previous.titles.append(f"{label} {suffix}")
            previous.names.append(name)
            continue
        units.append(_Unit(start, end, definition, [f"{label} {suffix}"], [name]))
    return units


# --- planning spans ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Piece:
    start: int  # 0-based rows, inclusive
    end: int
    titles: list[str]  # definitions in the piece; empty for code between definitions
    names: list[str]  # their qualified names
    mergeable: bool  # False for pieces planned inside an opened container, and for oversized ones
    fits: bool = True
    scope: tuple[tuple[str, str], ...] = field(default=())  # enclosing (title, qualified name) pairs


class _Planner:
    def __init__(self, lines: list[str], limits: Limits, grammar: _Grammar, path: str) -> None:
        self.lines = lines
        self.limits = limits
        self.grammar = grammar
        self.path = path
        # Prefix sums of line lengths: the characters of any range in O(1).
        self.offsets = [0]
        for line in lines:
            self.offsets.append(self.offsets[-1] + len(line))

    def chars(self, start: int, end: int) -> int:
        return self.offsets[end + 1] - self.offsets[start] + (end - start)

    def fits(self, start: int, end: int) -> bool:
        return end - start + 1 <= self.limits.window and self.chars(start, end) <= self.limits.max_chars

    def small(self, start: int, end: int) -> bool:
        # A quarter of a chunk: small enough that several belong together.
        return (end - start + 1) * 4 <= self.limits.window and self.chars(start, end) * 4 <= self.limits.max_chars

    def plan(self, units: list[_Unit], first: int, last: int, path: tuple[tuple[str, str], ...]) -> list[_Piece]:
        """Pieces covering every non-blank line of rows ``first..last`` holding ``units``, merged where small."""
        pieces: list[_Piece] = []
        cursor = first
        for unit in units:
            pieces.extend(self.loose(cursor, unit.start - 1, path))
            pieces.extend(self.definition(unit, path))
            cursor = unit.end + 1
        pieces.extend(self.loose(cursor, last, path))
        return self.merge(pieces)

    def loose(self, start: int, end: int, path: tuple[tuple[str, str], ...]) -> list[_Piece]:
        """Code between definitions, blank lines at either end trimmed."""
        while start <= end and not self.lines[start].strip():
            start += 1
        while end >= start and not self.lines[end].strip():
            end -= 1
        if start > end:
            return []
        fits = self.fits(start, end)
        return [_Piece(start, end, [], [], mergeable=fits, fits=fits, scope=path)]

    def definition(self, unit: _Unit, path: tuple[tuple[str, str], ...]) -> list[_Piece]:
        prefix = path[-1][1] + "." if path else ""
        names = [prefix + name for name in unit.names]
        node = unit.node
        members: list[_Unit] = []
        if node is not None and node.type in self.grammar.containers:
            members = _units(node, self.grammar, unit.start, unit.end)
        # A class of one method stays whole; with more, each member is its own span (the smallest
        # definition that answers a question), the class named in every member's header.
        if self.fits(unit.start, unit.end) and len(members) < 2:
            return [_Piece(unit.start, unit.end, unit.titles, names, mergeable=True, scope=path)]
        if node is not None and node.type in self.grammar.containers:
            inner = (*path, (unit.titles[0], names[0]))
            if members:
                pieces = self.plan(members, unit.start, unit.end, inner)
                for piece in pieces:
                    piece.mergeable = False
                return pieces
        return [_Piece(unit.start, unit.end, unit.titles, names, mergeable=False, fits=False, scope=path)]

    def merge(self, pieces: list[_Piece]) -> list[_Piece]:
        """Join neighbours while the result fits: runs of small pieces, and small code between definitions.

        A short run of code between definitions next to an oversized definition joins that definition's
        windows instead of making a chunk of its own (a class line before a huge ``__init__``).
        """
        merged: list[_Piece] = []
        group_small = False  # every piece in the current group is small
        for piece in pieces:
            previous = merged[-1] if merged else None
            piece_small = self.small(piece.start, piece.end)
            if previous is not None and self.joins(previous, group_small, piece, piece_small):
                if not previous.titles and len(piece.scope) > len(previous.scope):
                    previous.scope = piece.scope  # a class line joining the class's first method
                previous.end = piece.end
                previous.titles = previous.titles + piece.titles
                previous.names = previous.names + piece.names
                previous.fits = previous.fits and piece.fits
                previous.mergeable = previous.mergeable and piece.mergeable
                group_small = group_small and piece_small
            else:
                merged.append(
                    _Piece(
                        piece.start,
                        piece.end,
                        list(piece.titles),
                        list(piece.names),
                        piece.mergeable,
                        piece.fits,
                        piece.scope,
                    )
                )
                group_small = piece_small
        return merged

    def joins(self, previous: _Piece, group_small: bool, piece: _Piece, piece_small: bool) -> bool:
        loose_head = not previous.titles and self.small(previous.start, previous.end)
        loose_tail = not piece.titles and piece_small
        if not self.fits(previous.start, piece.end):
            # An oversized definition takes in short loose code of its own scope: it is cut into windows anyway.
            return previous.scope == piece.scope and (
                (loose_head and previous.mergeable and not piece.fits)
                or (loose_tail and piece.mergeable and not previous.fits)
            )
        if previous.mergeable and piece.mergeable:
            if previous.titles and piece.titles:
                return False  # two definitions stay apart: a hit must not span unrelated functions
            return (piece_small and group_small) or loose_tail or loose_head
        # Pieces of an opened container are final, but short loose code around it (`module X`, `end`) joins them.
        return (loose_head and previous.mergeable) or (loose_tail and piece.mergeable)

    def span(self, piece: _Piece) -> Span:
        parts = [self.path, *(title for title, _ in piece.scope)]
        if piece.titles:
            parts.append(", ".join(piece.titles))
        if piece.names:
            symbol: str | None = ", ".join(piece.names)
        else:
            symbol = piece.scope[-1][1] if piece.scope else None
        header = HEADER_SEPARATOR.join(part for part in parts if part)
        return Span(piece.start + 1, piece.end + 1, symbol, header, piece.fits)


def plan_spans(path: str, lines: list[str], language: str, limits: Limits) -> list[Span] | None:
    """Spans for the file whose ``lines`` (split at "\\n" only, without line breaks) are given.

    Returns None when no grammar covers ``language`` or when more than half of the file fails to parse,
    so that the caller falls back to plain line windows. Below that (C macros tree-sitter cannot expand,
    one broken function) the definitions that parsed keep their chunks and the code that did not is
    treated as code between definitions. Line numbers follow "\\n" exactly as tree-sitter's rows do.
    """
    if not grammars_for(path, language):
        return None
    source = "\n".join(lines).encode("utf-8", errors="replace")  # valid UTF-8: U+FFFD for undecodable bytes
    try:
        parsed = parse(source, path, language)
    except (ValueError, RuntimeError) as error:  # a broken grammar wheel must not fail indexing
        logger.warning("tree-sitter failed on %s: %s; using line windows", path, error)
        return None
    if parsed is None or parsed.error_lines * 2 > len(lines):
        return None
    tree = parsed.tree
    planner = _Planner(lines, limits, _GRAMMARS[parsed.grammar], path)
    last = len(lines) - 1
    if last < 0:
        return []
    units = _units(tree.root_node, planner.grammar, 0, last)
    return [planner.span(piece) for piece in planner.plan(units, 0, last, ())]
