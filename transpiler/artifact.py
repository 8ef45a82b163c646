"""Compiled files: the header that names the compiler and the source, and the text written to disk."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from . import FORMAT_VERSION, __version__

TOOL = "durable-generators"
_HEADER = re.compile(
    r"^# (?P<tool>durable-generators) (?P<version>\S+) \(format (?P<format>\d+)\) compiled this file from (?P<name>.+?); "
    r"source sha256 (?P<digest>[0-9a-f]{64}); options (?P<options>[\w,-]+)\. Do not edit")
_CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


def source_digest(source: bytes) -> str:
    """SHA-256 of a source file's bytes, as the header and the caches record it."""
    return hashlib.sha256(source).hexdigest()


def options_tag(all_generators: bool) -> str:
    return "all-generators" if all_generators else "default"


@dataclass(frozen=True)
class Header:
    version: str
    format: int
    name: str
    digest: str
    options: str

    def text(self) -> str:
        return (f"# {TOOL} {self.version} (format {self.format}) compiled this file from {self.name}; source sha256 {self.digest}; "
                f"options {self.options}. Do not edit: run 'durable compile' again.\n")

    def matches(self, digest: str, options: str) -> bool:
        """True when this header was written by this compiler version for that source and options."""
        return self.version == __version__ and self.format == FORMAT_VERSION and self.digest == digest and self.options == options


def read_header(text: str) -> Header | None:
    """The header of a compiled file (on its first line, or its second after a ``#!`` line)."""
    lines = text.split("\n", 2)
    for line in lines[:2]:
        m = _HEADER.match(line)
        if m:
            return Header(m["version"], int(m["format"]), m["name"], m["digest"], m["options"])
        if not line.startswith("#!"):
            break
    return None


def is_compiled(text: str | bytes) -> bool:
    """Whether a file's text (or bytes) was written by ``durable compile`` or the build step."""
    if isinstance(text, bytes):
        text = text[:600].decode("utf-8", "replace")
    return read_header(text) is not None


def strip_header(text: str) -> str:
    """``text`` without the header line ``with_header`` added (a rewritten coding line stays)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines[:2]):
        if _HEADER.match(line):
            return "".join(lines[:i] + lines[i + 1:])
    return text


def with_header(compiled: str, name: str, digest: str, options: str) -> str:
    """``compiled`` (a module's compiled source) with the header on its first line, after any ``#!``
    line. A coding declaration is rewritten to UTF-8, the encoding compiled files are written in."""
    header = Header(__version__, FORMAT_VERSION, name, digest, options).text()
    lines = compiled.splitlines(keepends=True)
    shebang = lines[:1] if lines and lines[0].startswith("#!") else []
    rest = lines[len(shebang):]
    for i in range(min(2 - len(shebang), len(rest))):
        if _CODING.match(rest[i]):
            rest[i] = "# -*- coding: utf-8 -*-\n"
    return "".join(shebang) + header + "".join(rest)


def compile_file_text(data: bytes, path: str, *, all_generators: bool = False) -> str:
    """What ``durable compile`` and the build step write for the source file ``path`` whose bytes are
    ``data``: the header, then the compiled module. Raises ``CompileError`` for problems in the code
    and ``UnicodeDecodeError``/``SyntaxError`` for a file that cannot be decoded."""
    import importlib.util
    import os

    from .generate import compile_module

    source = importlib.util.decode_source(data)
    compiled = compile_module(source, path, all_generators=all_generators)
    return with_header(compiled, os.path.basename(path), source_digest(data), options_tag(all_generators))
