"""Turning schema failures into one clear message that names the file, the key and the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgeready.errors import ConfigError

__all__ = ["ConfigError", "read_yaml", "validate_file", "where"]

M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest YAML node on `loc` that exists (the offending key itself when
    it is there, its parent mapping when it is missing)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = key.start_mark.line + 1 if key is not None else line, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    """The mapping in `path` and its node tree (for line numbers). Safe loading only: a tag such as
    !!python/object is an error, never a constructor call."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    text = _decode(path, path.read_bytes())
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _reject_duplicate_keys(path, node)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, node


def _decode(path: Path, raw: bytes) -> str:
    """UTF-8 text, or a ConfigError at the first bad byte (an uncaught UnicodeDecodeError would end the
    pytest run with an INTERNALERROR instead of exit 4)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
            f"({exc.reason}); save the file as UTF-8"
        ) from None


def _reject_duplicate_keys(path: Path, root: yaml.Node | None) -> None:
    """PyYAML keeps the later of two equal keys without a word, so a threshold written twice would be
    judged against whichever came last: every mapping's keys must be distinct."""
    problems: list[tuple[int, str]] = []
    seen: set[int] = set()  # aliases share nodes: each is walked once ("billion laughs" stays linear)
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*where, str(i))) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            problems += _duplicates(path, node, where)
            stack.extend((value, (*where, _key_name(key))) for key, value in node.value)
    if problems:
        raise ConfigError("\n".join(message for _, message in sorted(problems)))


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _key_name(key: yaml.Node) -> str:
    return str(key.value) if isinstance(key, yaml.ScalarNode) else f"<{key.tag}>"


def _duplicates(path: Path, node: yaml.MappingNode, where: tuple[str, ...]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    first: dict[tuple[str, str], int] = {}
    for key, _ in node.value:
        # Merge keys (`<<: *defaults`) are not overrides; complex keys do not occur in our files.
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        line = key.start_mark.line + 1
        ident = (key.tag, key.value)  # tag and text: `1` (an int) and `"1"` (a string) are different keys
        if ident in first:
            dotted = ".".join((*where, _key_name(key)))
            found.append((line, f"{path}:{line}: {dotted}: duplicate key (first at line {first[ident]})"))
        else:
            first[ident] = line
    return found


def where(path: Path, loc: tuple[int | str, ...]) -> str:
    """`path:line` of the key at `loc` in a YAML file (just the path when the file cannot be read)."""
    try:
        _, node = read_yaml(path)
    except ConfigError:
        return str(path)
    line = _line_of(node, loc)
    return f"{path}:{line}" if line else str(path)


def validate_file(model: type[M], path: Path, context: dict[str, Any] | None = None) -> M:
    """Load `path` into `model`; every schema problem becomes a line `file:line: key: message`."""
    data, node = read_yaml(path)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(node, loc)
            where = f"{path}:{line}" if line else str(path)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelled? see the schema: edgeready/schema.py, and for gates: edgeready/gates/)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            lines.append(f"{where}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
