"""A safe YAML reader for case files and ``--set`` values.

PyYAML implements YAML 1.1, which reads ``1e-4`` as a string (its float pattern wants a dot)
and ``1:20`` as the sexagesimal integer 80, keeps the last of two equal keys silently and
expands aliases without bound (an "alias bomb" of a few hundred bytes becomes gigabytes). This
loader resolves plain scalars by the YAML 1.2 core schema (numbers, null, booleans), rejects
duplicate keys, aliases and anchors, non-string keys, nesting deeper than ``MAX_DEPTH``, files
larger than ``MAX_BYTES`` and text that is not UTF-8. Every rejection is a
:class:`femplast.FemplastInputError` naming the file (or key) and the line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from femplast.errors import FemplastInputError

MAX_BYTES = 1 << 20  # a case file is a few kB; anything bigger is not a case
MAX_DEPTH = 32

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
_INT = re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"(?:[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
                    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$")
_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"(?:~|null|Null|NULL|)$")


class _Problem(Exception):
    """Raised inside the loader; turned into a FemplastInputError with the file name."""


class _Resolver(yaml.resolver.BaseResolver):
    pass


for _tag, _rx, _first in (
        ("tag:yaml.org,2002:bool", _BOOL, "tTfF"),
        ("tag:yaml.org,2002:int", _INT, "-+0123456789"),
        ("tag:yaml.org,2002:float", _FLOAT, "-+0123456789."),
        ("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])):
    _Resolver.add_implicit_resolver(_tag, _rx, list(_first))


class _Constructor(yaml.constructor.SafeConstructor):
    def construct_yaml_int(self, node):
        v = self.construct_scalar(node)
        sign, body = (-1, v[1:]) if v[:1] == "-" else (1, v.lstrip("+"))
        base = 8 if body.startswith("0o") else 16 if body.startswith("0x") else 10
        return sign * int(body[2:] if base != 10 else body, base)

    def construct_yaml_float(self, node):
        v = self.construct_scalar(node).lower()
        if v.lstrip("+-") == ".inf":
            return -math.inf if v.startswith("-") else math.inf
        if v == ".nan":
            return math.nan
        return float(v)

    def construct_yaml_bool(self, node):
        return self.construct_scalar(node).lower() == "true"

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        seen: dict = {}
        for k, _ in node.value:
            if k.tag == "tag:yaml.org,2002:merge":
                raise _Problem(f"line {k.start_mark.line + 1}: merge keys '<<' are not "
                               "supported")
            kv = self.construct_object(k, deep=True)
            if not isinstance(kv, str):
                raise _Problem(f"line {k.start_mark.line + 1}: key {kv!r} is not a string")
            if kv in seen:
                raise _Problem(f"line {k.start_mark.line + 1}: duplicate key {kv!r} (first "
                               f"on line {seen[kv] + 1})")
            seen[kv] = k.start_mark.line
        return super().construct_mapping(node, deep)


for _t, _m in (("int", "construct_yaml_int"), ("float", "construct_yaml_float"),
               ("bool", "construct_yaml_bool")):
    _Constructor.add_constructor(f"tag:yaml.org,2002:{_t}", getattr(_Constructor, _m))


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
              yaml.composer.Composer, _Constructor, _Resolver):
    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        # aliases and anchors are refused before anything is expanded (no alias bombs)
        ev = self.peek_event()
        if isinstance(ev, yaml.AliasEvent):
            raise _Problem(f"line {ev.start_mark.line + 1}: YAML aliases (*{ev.anchor}) are "
                           "not supported; write the value out")
        if getattr(ev, "anchor", None) is not None:
            raise _Problem(f"line {ev.start_mark.line + 1}: YAML anchors (&{ev.anchor}) are "
                           "not supported; write the value out")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Problem(f"line {ev.start_mark.line + 1}: nested deeper than {MAX_DEPTH} "
                           "levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def loads(text: str, key: str, value) -> object:
    """Parse one YAML document; ``key`` and ``value`` name the source in error messages."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Problem as exc:
        raise FemplastInputError(key, value, f"case YAML ({exc})") from None
    except yaml.YAMLError as exc:
        raise FemplastInputError(key, value, f"valid YAML ({_first_line(exc)})") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a timestamp out of range
        raise FemplastInputError(key, value, f"valid YAML ({_first_line(exc)})") from None
    finally:
        loader.dispose()


def load_case_file(path: str | Path) -> dict:
    """The top-level mapping of a case file (FemplastInputError naming the file otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FemplastInputError("case file", str(path), "an existing YAML file")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FemplastInputError("case file", str(path), f"a readable file ({exc.strerror})") \
            from None
    if len(raw) > MAX_BYTES:
        raise FemplastInputError("case file", str(path), f"a YAML case of at most "
                                 f"{MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FemplastInputError("case file", str(path), f"UTF-8 text (byte {exc.start} is "
                                 "not UTF-8)") from None
    if "\x00" in text:
        raise FemplastInputError("case file", str(path), "UTF-8 text (it contains NUL bytes)")
    text = text.removeprefix("\ufeff")
    data = loads(text, "case file", str(path))
    if data is None:
        raise FemplastInputError("case file", str(path), "a YAML mapping of case keys (the "
                                 "file is empty or only comments)")
    if not isinstance(data, dict):
        raise FemplastInputError("case file", str(path), "a YAML mapping of case keys at the "
                                 f"top level (found a {type(data).__name__})")
    return data


def load_value(text: str, key: str) -> object:
    """One ``--set`` value."""
    if len(text) > MAX_BYTES:
        raise FemplastInputError(key, text[:40] + "...", "a value of at most 1 MiB")
    return loads(text, key, text)
