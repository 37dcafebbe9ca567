"""``actors.chunking.chunk_file`` along tree-sitter syntax: symbols, qualified names, line ranges, headers,
the line-window fallback, splitting and merging, and the invariants every chunking keeps."""

from __future__ import annotations

import keyword
import threading

import pytest
from hypothesis import HealthCheck, find, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from actors import syntax_chunking
from actors.chunking import Chunk, chunk_file, chunk_text, split_lines
from actors.scanning import language_of

# Small windows so that a class is too big for one chunk and is opened method by method.
_WINDOW = 6


def _chunks(path: str, source: str, *, window: int = _WINDOW, overlap: int = 1, max_chars: int = 2000) -> list[Chunk]:
    return chunk_file(path, source, language_of(path), window=window, overlap=overlap, max_chars=max_chars)


def _rows(chunks: list[Chunk]) -> list[tuple[int, int, str | None, str]]:
    return [(c.start_line, c.end_line, c.symbol, c.header) for c in chunks]


def check_invariants(text: str, chunks: list[Chunk], *, window: int, max_chars: int) -> None:
    """Bounds, exact text, size limits and coverage of every non-blank line."""
    lines = split_lines(text)
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines), chunk
        assert chunk.end_line - chunk.start_line + 1 <= window, chunk
        assert len(chunk.text) <= max_chars, chunk
        assert chunk.text.strip(), chunk
        assert chunk.text == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])[:max_chars], chunk
        assert chunk.header, chunk
    covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
    for number, line in enumerate(lines, start=1):
        if number not in covered:
            # Only a blank line, or one whose first max_chars characters are blank (cut off), may be left out.
            assert not line[:max_chars].strip(), f"line {number} ({line[:40]!r}) is in no chunk"


_PARSER_PY = """\
import re


def tokenize(text):
    # Split text into words.
    return re.findall("[a-z]+", text)


class Parser:
    def __init__(self, text):
        self.text = text
        self.pos = 0

    @property
    def done(self):
        return self.pos >= len(self.text)
"""

_APP_JS = """\
const fs = require("fs");

function readConfig(path) {
  const raw = fs.readFileSync(path);
  return JSON.parse(raw);
}

class Store {
  constructor() {
    this.items = [];
    this.count = 0;
  }

  add(item) {
    this.items.push(item);
    this.count += 1;
  }
}
"""

_SHAPES_TS = """\
export interface Shape {
  area(): number;
}

export class Circle implements Shape {
  constructor(private r: number) {
    this.r = r;
  }

  area(): number {
    const r2 = this.r * this.r;
    return Math.PI * r2;
  }
}

export const unit = (): Circle => {
  return new Circle(1);
};
"""

_BUTTON_TSX = """\
import React from "react";

type Props = { label: string };

export function Button({ label }: Props) {
  const text = label.toUpperCase();
  return <button className="btn">{text}</button>;
}
"""

_SERVER_GO = """\
package server

import "net/http"

type Server struct {
	addr string
}

func (s *Server) Start() error {
	mux := http.NewServeMux()
	return http.ListenAndServe(s.addr, mux)
}

func New(addr string) *Server {
	srv := &Server{addr: addr}
	return srv
}
"""

_LIB_RS = """\
use std::collections::HashMap;

pub struct Index {
    words: HashMap<String, usize>,
}

impl Index {
    pub fn new() -> Self {
        let words = HashMap::new();
        Index { words }
    }

    pub fn add(&mut self, word: &str) {
        let count = self.words.entry(word.to_string()).or_insert(0);
        *count += 1;
    }
}
"""

_INVOICE_JAVA = """\
package billing;

public class Invoice {
    private final long cents;

    public Invoice(long cents) {
        this.cents = cents;
        validate();
    }

    public long total() {
        long tax = cents / 10;
        return cents + tax;
    }
}
"""

_BUFFER_C = """\
#include <stdlib.h>

struct buffer {
    char *data;
    size_t len;
};

static struct buffer *buffer_new(size_t cap)
{
    struct buffer *b = malloc(sizeof *b);
    b->data = malloc(cap);
    return b;
}
"""

_SHAPE_CPP = """\
#include <cmath>

namespace geo {

class Circle {
public:
    explicit Circle(double r) : r_(r) {
        check();
    }

    double area() const {
        double r2 = r_ * r_;
        return M_PI * r2;
    }

private:
    double r_;
};

}  // namespace geo
"""

_INVOICE_RB = """\
require "json"

module Billing
  class Invoice
    def initialize(total)
      @total = total
      @paid = false
    end

    def to_json(*args)
      data = { total: @total }
      data.to_json(*args)
    end
  end
end
"""

_PARSER_CS = """\
using System;

namespace App.Text
{
    public class Parser
    {
        public Parser(string text)
        {
            Text = text;
        }

        public int Count()
        {
            return Text.Length;
        }
    }
}
"""

_CART_PHP = """\
<?php

class Cart
{
    private array $items = [];

    public function add(string $sku): void
    {
        $this->items[] = $sku;
    }

    public function count(): int
    {
        return count($this->items);
    }
}
"""


# --- one snippet per language ----------------------------------------------------------------------

_EXPECTED: dict[str, tuple[str, list[tuple[int, int, str | None, str]]]] = {
    "pkg/parser.py": (
        _PARSER_PY,
        [
            (1, 6, "tokenize", "pkg/parser.py · def tokenize"),  # the import joins the function below it
            (9, 12, "Parser.__init__", "pkg/parser.py · class Parser · def __init__"),
            (14, 16, "Parser.done", "pkg/parser.py · class Parser · def done"),  # decorator included
        ],
    ),
    "src/app.js": (
        _APP_JS,
        [
            (1, 6, "readConfig", "src/app.js · function readConfig"),
            (8, 12, "Store.constructor", "src/app.js · class Store · method constructor"),
            (14, 18, "Store.add", "src/app.js · class Store · method add"),
        ],
    ),
    "src/shapes.ts": (
        _SHAPES_TS,
        [
            (1, 3, "Shape", "src/shapes.ts · interface Shape"),
            (5, 8, "Circle.constructor", "src/shapes.ts · class Circle · method constructor"),
            (10, 14, "Circle.area", "src/shapes.ts · class Circle · method area"),
            (16, 18, "unit", "src/shapes.ts · function unit"),  # const unit = () => ...
        ],
    ),
    "ui/Button.tsx": (
        _BUTTON_TSX,
        [
            (1, 3, "Props", "ui/Button.tsx · type Props"),
            (5, 8, "Button", "ui/Button.tsx · function Button"),
        ],
    ),
    "server/server.go": (
        _SERVER_GO,
        [
            (1, 3, None, "server/server.go"),
            (5, 7, "Server", "server/server.go · type Server"),
            (9, 12, "Server.Start", "server/server.go · func (Server) Start"),
            (14, 17, "New", "server/server.go · func New"),
        ],
    ),
    "src/lib.rs": (
        _LIB_RS,
        [
            (1, 5, "Index", "src/lib.rs · struct Index"),
            (7, 11, "Index.new", "src/lib.rs · impl Index · fn new"),
            (13, 17, "Index.add", "src/lib.rs · impl Index · fn add"),
        ],
    ),
    "billing/Invoice.java": (
        _INVOICE_JAVA,
        [
            (1, 4, "Invoice", "billing/Invoice.java · class Invoice"),
            (6, 9, "Invoice.Invoice", "billing/Invoice.java · class Invoice · constructor Invoice"),
            (11, 15, "Invoice.total", "billing/Invoice.java · class Invoice · method total"),
        ],
    ),
    "lib/buffer.c": (
        _BUFFER_C,
        [
            (1, 6, "buffer", "lib/buffer.c · struct buffer"),
            (8, 13, "buffer_new", "lib/buffer.c · function buffer_new"),  # name found under `*buffer_new(...)`
        ],
    ),
    "geo/shape.cpp": (
        _SHAPE_CPP,
        [
            (1, 6, "geo.Circle", "geo/shape.cpp · namespace geo · class Circle"),
            (7, 9, "geo.Circle.Circle", "geo/shape.cpp · namespace geo · class Circle · function Circle"),
            (11, 14, "geo.Circle.area", "geo/shape.cpp · namespace geo · class Circle · function area"),
            (16, 20, "geo.Circle", "geo/shape.cpp · namespace geo · class Circle"),
        ],
    ),
    "lib/invoice.rb": (
        _INVOICE_RB,
        [
            (1, 1, None, "lib/invoice.rb"),
            (3, 8, "Billing.Invoice.initialize", "lib/invoice.rb · module Billing · class Invoice · def initialize"),
            (10, 15, "Billing.Invoice.to_json", "lib/invoice.rb · module Billing · class Invoice · def to_json"),
        ],
    ),
    "App/Parser.cs": (
        _PARSER_CS,
        [
            (1, 4, "App.Text", "App/Parser.cs · namespace App.Text"),
            (5, 6, "App.Text.Parser", "App/Parser.cs · namespace App.Text · class Parser"),
            (7, 10, "App.Text.Parser.Parser", "App/Parser.cs · namespace App.Text · class Parser · constructor Parser"),
            (12, 17, "App.Text.Parser.Count", "App/Parser.cs · namespace App.Text · class Parser · method Count"),
        ],
    ),
    "src/Cart.php": (
        _CART_PHP,
        [
            (1, 5, "Cart", "src/Cart.php · class Cart"),
            (7, 10, "Cart.add", "src/Cart.php · class Cart · function add"),
            (12, 16, "Cart.count", "src/Cart.php · class Cart · function count"),
        ],
    ),
}


@pytest.mark.parametrize("path", list(_EXPECTED))
def test_each_language_is_chunked_along_its_definitions(path: str) -> None:
    source, expected = _EXPECTED[path]
    chunks = _chunks(path, source)
    assert _rows(chunks) == expected
    check_invariants(source, chunks, window=_WINDOW, max_chars=2000)


def test_supported_languages_cover_the_major_ones() -> None:
    wanted = {"python", "javascript", "typescript", "go", "rust", "java", "c", "cpp", "ruby", "csharp", "php"}
    assert wanted <= syntax_chunking.supported_languages()


def test_small_definitions_stay_apart_and_a_class_is_cut_into_its_methods() -> None:
    chunks = _chunks("pkg/parser.py", _PARSER_PY, window=40)
    # All of it would fit in one 40-line chunk, but a hit must name one definition: the import joins
    # the function after it, the class line its first method, and each method carries the class.
    assert _rows(chunks) == [
        (1, 6, "tokenize", "pkg/parser.py · def tokenize"),
        (9, 12, "Parser.__init__", "pkg/parser.py · class Parser · def __init__"),
        (14, 16, "Parser.done", "pkg/parser.py · class Parser · def done"),
    ]


def test_a_class_of_one_method_is_one_chunk_named_after_the_class() -> None:
    source = "class Box:\n    size = 1\n\n    def grow(self):\n        self.size += 1\n"
    assert _rows(_chunks("box.py", source, window=40)) == [(1, 5, "Box", "box.py · class Box")]


def test_method_text_is_exactly_its_lines() -> None:
    (chunk,) = [c for c in _chunks("src/lib.rs", _LIB_RS) if c.symbol == "Index.add"]
    assert chunk.text == "\n".join(_LIB_RS.split("\n")[12:17])
    assert chunk.text.startswith("    pub fn add(&mut self, word: &str) {")
    assert chunk.text.endswith("    }\n}")  # the impl's closing brace rides along


def test_comments_above_a_definition_belong_to_it() -> None:
    source = "x = 1\n\n# Adds two numbers.\n# Carefully.\ndef add(a, b):\n    s = a + b\n    return s\n"
    chunks = _chunks("m.py", source, window=6)
    assert _rows(chunks) == [(1, 1, None, "m.py"), (3, 7, "add", "m.py · def add")]
    assert chunks[-1].text.startswith("# Adds two numbers.")


# --- fallback to line windows --------------------------------------------------------------------


@pytest.mark.parametrize(("path", "language"), [("notes.txt", "text"), ("build.gradle", "gradle"), ("a.kt", "kotlin")])
def test_languages_without_a_grammar_get_line_windows(path: str, language: str) -> None:
    text = "".join(f"fun f{i}() = {i}\n" for i in range(30))
    chunks = chunk_file(path, text, language, window=10, overlap=2, max_chars=2000)
    assert chunks == chunk_text(text, window=10, overlap=2, max_chars=2000, path=path)
    assert chunks[0].header == path


def test_a_file_with_a_syntax_error_gets_line_windows() -> None:
    broken = "def ok():\n    return 1\n\n" + "".join(f"x{i} = = {i}\n" for i in range(20))  # mostly broken
    assert (
        syntax_chunking.plan_spans("b.py", split_lines(broken), "python", syntax_chunking.Limits(10, 2, 2000)) is None
    )
    chunks = chunk_file("b.py", broken, "python", window=10, overlap=2, max_chars=2000)
    assert chunks == chunk_text(broken, window=10, overlap=2, max_chars=2000, path="b.py")
    assert chunks[0].symbol == "ok"  # the fallback still names the first definition it sees
    assert chunks[0].header == "b.py · ok"
    check_invariants(broken, chunks, window=10, max_chars=2000)


def test_tsx_needs_the_tsx_grammar_and_gets_it_from_the_extension() -> None:
    source = _BUTTON_TSX.encode()
    as_typescript = syntax_chunking.parse(source, "ui/Button.ts", "typescript")
    assert as_typescript is not None and as_typescript.error_lines > 0  # JSX is no TypeScript
    as_tsx = syntax_chunking.parse(source, "ui/Button.tsx", "typescript")
    assert as_tsx is not None and (as_tsx.grammar, as_tsx.error_lines) == ("tsx", 0)


def test_one_broken_definition_does_not_cost_the_others_their_chunks() -> None:
    good = "".join(f"def good_{i}(x):\n    y = x * {i}\n    z = y + 1\n    return z\n\n\n" for i in range(4))
    broken = "def broken(x:\n    return [x\n\n\n"
    source = good + broken + "def last(x):\n    w = x - 1\n    v = w * 2\n    return v\n"
    parsed = syntax_chunking.parse(source.encode(), "mixed.py", "python")
    assert parsed is not None and 0 < parsed.error_lines < len(split_lines(source)) // 2
    chunks = _chunks("mixed.py", source, window=4)
    check_invariants(source, chunks, window=4, max_chars=2000)
    symbols = [c.symbol for c in chunks]
    assert symbols[:4] == [f"good_{i}" for i in range(4)]
    assert any("def broken(x:" in c.text for c in chunks)  # still indexed, as plain code


def test_macro_heavy_c_keeps_the_functions_that_parse() -> None:
    source = (
        "#include <Python.h>\n\n"
        "static PyObject *\nspam_system(PyObject *self, PyObject *args)\n{\n    return PyLong_FromLong(0);\n}\n\n"
        'static PyMethodDef SpamMethods[] = {\n    {"system", spam_system, METH_VARARGS, "Run."},\n'
        "    {NULL, NULL, 0, NULL}\n};\n\n"
        "PyMODINIT_FUNC\nPyInit_spam(void)\n{\n    return PyModule_Create(&spammodule);\n}\n"
    )
    chunks = _chunks("spam.c", source, window=6)
    check_invariants(source, chunks, window=6, max_chars=2000)
    assert any(c.symbol == "spam_system" and c.header == "spam.c · function spam_system" for c in chunks)


def test_a_cpp_header_named_dot_h_is_parsed_as_cpp() -> None:
    header = (
        "#pragma once\nnamespace geo {\nclass Box {\npublic:\n    int width() const { return w_; }\n"
        "    int w_;\n};\n}\n"
    )
    parsed = syntax_chunking.parse(header.encode(), "geo/box.h", "c")
    assert parsed is not None and (parsed.grammar, parsed.error_lines) == ("cpp", 0)
    chunks = chunk_file("geo/box.h", header, "c", window=40, overlap=2, max_chars=2000)
    assert [c.symbol for c in chunks] == ["geo"]
    assert chunks[0].header == "geo/box.h · namespace geo"


# --- splitting and merging -----------------------------------------------------------------------


def test_a_huge_function_is_split_into_overlapping_windows_that_keep_its_name() -> None:
    body = "".join(f"        total += step_{i}(total)\n" for i in range(100))
    source = "import os\n\n\nclass Engine:\n    def run(self, total):\n" + body + "        return total\n"
    chunks = _chunks("engine.py", source, window=20, overlap=3)
    check_invariants(source, chunks, window=20, max_chars=2000)
    run_chunks = [c for c in chunks if c.symbol == "Engine.run"]
    assert len(run_chunks) >= 6
    assert {c.header for c in run_chunks} == {"engine.py · class Engine · def run"}
    assert run_chunks[-1].end_line == len(split_lines(source))
    for before, after in zip(run_chunks, run_chunks[1:], strict=False):
        assert after.start_line > before.start_line
        assert 0 <= before.end_line - after.start_line + 1 <= 3  # the configured overlap, never more


def test_a_long_line_is_capped_at_max_chars() -> None:
    source = "def f():\n    return '" + "x" * 5000 + "'\n"
    chunks = _chunks("long.py", source, window=40, max_chars=300)
    check_invariants(source, chunks, window=40, max_chars=300)
    assert all(c.symbol == "f" for c in chunks)


def test_tiny_functions_each_get_their_own_chunk_and_loose_code_joins_them() -> None:
    source = "".join(f"def f{i}(x):\n    return x + {i}\n\n\nLIMIT_{i} = {i}\n\n\n" for i in range(30))
    chunks = _chunks("tiny.py", source, window=20, overlap=2)
    check_invariants(source, chunks, window=20, max_chars=2000)
    # Merging tiny neighbours would make one hit span several unrelated functions.
    assert [c.symbol for c in chunks] == [f"f{i}" for i in range(30)]
    assert chunks[0].header == "tiny.py · def f0"
    assert chunks[0].text == "def f0(x):\n    return x + 0\n\n\nLIMIT_0 = 0"  # the constant after it rides along


def test_medium_functions_each_get_their_own_chunk() -> None:
    body = "".join(f"    y = y * {j}\n" for j in range(10))
    # 12 lines each: more than a quarter of the window, so not "small".
    source = "".join(f"def g{i}(y):\n{body}    return y\n\n\n" for i in range(5))
    chunks = _chunks("medium.py", source, window=40, overlap=2)
    assert [c.symbol for c in chunks] == [f"g{i}" for i in range(5)]
    assert [(c.start_line, c.end_line) for c in chunks] == [(1 + 14 * i, 12 + 14 * i) for i in range(5)]


def test_module_code_between_definitions_is_covered() -> None:
    big = "".join(f"    v = v + {j}\n" for j in range(12))
    source = (
        "import sys\n\nLIMIT = 10\n\n\ndef first(v):\n" + big + "    return v\n\n\n"
        "if __name__ == '__main__':\n    first(LIMIT)\n    sys.exit(0)\n\n\n"
        "def second(v):\n" + big + "    return v\n"
    )
    chunks = _chunks("script.py", source, window=16, overlap=2)
    check_invariants(source, chunks, window=16, max_chars=2000)
    main_block = next(c for c in chunks if "__main__" in c.text)
    assert "sys.exit(0)" in main_block.text


# --- bytes, line breaks, parsers ------------------------------------------------------------------


def test_invalid_utf8_keeps_line_numbers() -> None:
    raw = b"def a():\n    s = '\xff\xfe caf\xe9'\n    return s\n\n\ndef b():\n    t = 2\n    return t\n"
    text = raw.decode("utf-8", errors="replace")
    chunks = _chunks("latin.py", text, window=3)
    assert _rows(chunks) == [(1, 3, "a", "latin.py · def a"), (6, 8, "b", "latin.py · def b")]
    assert "\ufffd\ufffd caf\ufffd" in chunks[0].text


def test_crlf_files_keep_line_numbers_and_lose_the_carriage_returns() -> None:
    source = "def a():\r\n    x = 1\r\n    return x\r\n\r\ndef b():\r\n    y = 2\r\n    return y\r\n"
    chunks = _chunks("crlf.py", source, window=3)
    assert _rows(chunks) == [(1, 3, "a", "crlf.py · def a"), (5, 7, "b", "crlf.py · def b")]
    assert "\r" not in chunks[0].text


def test_form_feeds_do_not_shift_line_numbers() -> None:
    source = "def a():\n    return 1\n\x0c\ndef b():\n    y = 2\n    return y\n"
    chunks = _chunks("ff.py", source, window=3)
    assert [(c.start_line, c.end_line, c.symbol) for c in chunks][-1] == (4, 6, "b")


def test_parsers_are_made_once_per_thread() -> None:
    first = syntax_chunking._parser("python")
    assert syntax_chunking._parser("python") is first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(syntax_chunking._parser("python")))
    thread.start()
    thread.join()
    assert other and other[0] is not first  # tree-sitter parsers are not thread safe


def test_blank_file_gives_no_chunks() -> None:
    assert _chunks("empty.py", "\n\n   \n") == []
    assert _chunks("empty.py", "") == []


# --- properties over generated sources ------------------------------------------------------------


def _usable_name(name: str) -> bool:
    """Not a keyword, soft keyword or, once capitalized for a class, ``None``/``True``/``False``:
    ``class A:\n    as = 1`` is not Python, so no chunker property can hold on it."""
    return not any(keyword.iskeyword(n) or keyword.issoftkeyword(n) for n in (name, name.capitalize()))


_identifier = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(_usable_name)
_statement = st.one_of(
    _identifier.map(lambda name: f"{name} = 1"),
    st.just("# a comment"),
    st.just(""),
    st.integers(min_value=100, max_value=700).map(lambda n: "data = '" + "d" * n + "'"),
)


@st.composite
def _python_function(draw: st.DrawFn, indent: str = "") -> str:
    name = draw(_identifier)
    body = draw(st.lists(_statement, min_size=0, max_size=50))
    decorator = f"{indent}@decorate\n" if draw(st.booleans()) else ""
    comment = f"{indent}# {name} explained\n" if draw(st.booleans()) else ""
    lines = [f"{indent}    {line}" if line else "" for line in body] + [f"{indent}    return {name}"]
    return f"{comment}{decorator}{indent}def {name}(x):\n" + "\n".join(lines) + "\n"


@st.composite
def _python_class(draw: st.DrawFn) -> str:
    name = draw(_identifier).capitalize()
    methods = draw(st.lists(_python_function(indent="    "), min_size=0, max_size=6))
    fields = draw(st.lists(_statement.filter(bool), max_size=4))
    head = f"class {name}:\n" + "".join(f"    {field}\n" for field in fields) + "    pass\n"
    return head + "\n".join(methods)


def test_generated_names_are_never_python_keywords() -> None:
    # Before: "as", "if", "none" (-> class None) ... were drawn, and the property failed at random.
    with pytest.raises(NoSuchExample):
        find(_identifier, lambda name: not _usable_name(name), settings=hsettings(max_examples=2000, database=None))


_python_source = st.lists(
    st.one_of(_python_function(), _python_class(), _statement.map(lambda s: s + "\n")),
    max_size=12,
).map(lambda parts: "\n".join(parts))


@st.composite
def _js_source(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        name = draw(_identifier)
        body = "".join(f"  let v{i} = {i};\n" for i in range(draw(st.integers(min_value=0, max_value=40))))
        kind = draw(st.sampled_from(["function", "class", "arrow", "statement"]))
        if kind == "function":
            parts.append(f"function {name}() {{\n{body}}}\n")
        elif kind == "class":
            methods = "".join(
                f"  m{i}() {{\n  {body}  }}\n" for i in range(draw(st.integers(min_value=0, max_value=4)))
            )
            parts.append(f"class {name.capitalize()} {{\n{methods}}}\n")
        elif kind == "arrow":
            parts.append(f"export const {name} = () => {{\n{body}}};\n")
        else:
            parts.append(f"console.log({name!r});\n")
    return "\n".join(parts)


_limits = st.tuples(st.integers(min_value=5, max_value=60), st.integers(min_value=200, max_value=3000)).flatmap(
    lambda wm: st.tuples(st.just(wm[0]), st.integers(min_value=0, max_value=wm[0] - 1), st.just(wm[1]))
)
_property_settings = hsettings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@_property_settings
@given(source=_python_source, limits=_limits)
def test_property_generated_python(source: str, limits: tuple[int, int, int]) -> None:
    window, overlap, max_chars = limits
    chunks = chunk_file("gen.py", source, "python", window=window, overlap=overlap, max_chars=max_chars)
    check_invariants(source, chunks, window=window, max_chars=max_chars)
    assert (
        syntax_chunking.plan_spans("gen.py", split_lines(source), "python", syntax_chunking.Limits(*limits)) is not None
    )


@_property_settings
@given(source=_js_source(), limits=_limits)
def test_property_generated_javascript(source: str, limits: tuple[int, int, int]) -> None:
    window, overlap, max_chars = limits
    chunks = chunk_file("gen.js", source, "javascript", window=window, overlap=overlap, max_chars=max_chars)
    check_invariants(source, chunks, window=window, max_chars=max_chars)
    assert (
        syntax_chunking.plan_spans("gen.js", split_lines(source), "javascript", syntax_chunking.Limits(*limits))
        is not None
    )


_any_line = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=60),
    st.sampled_from(["def f():", "    return 1", "class A:", "}", "{", "fn main() {", "func F() {", "int x;", ""]),
)


@_property_settings
@given(
    lines=st.lists(_any_line, max_size=80),
    path=st.sampled_from(["x.py", "x.js", "x.ts", "x.tsx", "x.go", "x.rs", "x.java", "x.c", "x.h", "x.cpp", "x.rb"]),
    limits=_limits,
)
def test_property_arbitrary_text_in_any_language(lines: list[str], path: str, limits: tuple[int, int, int]) -> None:
    source = "\n".join(lines)
    window, overlap, max_chars = limits
    chunks = chunk_file(path, source, language_of(path), window=window, overlap=overlap, max_chars=max_chars)
    check_invariants(source, chunks, window=window, max_chars=max_chars)
