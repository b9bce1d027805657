"""Reading a user's YAML file (a profile; later a sweep spec or a soak plan) so that nothing in it can crash or
exhaust the harness, and so that every problem can name its line.

PyYAML's safe loader, bounded and stricter: the file is at most `MAX_FILE_BYTES` and must be UTF-8; nesting
is at most `MAX_DEPTH` deep; at most `MAX_ALIASES` aliases (a few hundred bytes of nested aliases would
otherwise expand to gigabytes when anything walks the result); integers have at most `MAX_INT_DIGITS` digits;
mapping keys must be strings, and a key given twice is an error (YAML would silently keep the last). Each
mapping's keys keep the line they were written on (`LineMap`), so a validator can say `file:12: field: …`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode

from harness.errors import BadInput

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 100
MAX_INT_DIGITS = 30


@dataclass
class LineMap:
    """Where each key of each mapping was written: id(mapping) -> {key: line (1-based)}."""

    lines: dict[int, dict[str, int]] = field(default_factory=dict)

    def line_of(self, mapping: object, key: str) -> int | None:
        return self.lines.get(id(mapping), {}).get(key)


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str, line_map: LineMap) -> None:
        super().__init__(stream)
        self.line_map = line_map
        self._depth = 0
        self._aliases = 0
        self._node_lines: dict[int, dict[str, int]] = {}

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise ConstructorError(None, None, f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                       self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return Composer.compose_node(self, parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)  # `<<: *alias` merges first: a merged key is not a duplicate
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise ConstructorError(None, None, f"expected a string key, got {type(key).__name__}",
                                       key_node.start_mark)
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key[:40]!r} (first on line {seen[key]})",
                                       key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        self._node_lines[id(node)] = seen
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_map(self, node: MappingNode) -> Generator[dict[Any, Any], None, None]:
        # As SafeConstructor's (a mapping is yielded empty first, so aliases to it resolve), remembering its lines.
        data: dict[Any, Any] = {}
        yield data
        data.update(self.construct_mapping(node))
        self.line_map.lines[id(data)] = self._node_lines.pop(id(node), {})

    def construct_yaml_int(self, node: ScalarNode) -> int:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                                   node.start_mark)
        value: int = super().construct_yaml_int(node)
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:map", _BoundedLoader.construct_yaml_map)


def read_yaml(path: Path, what: str) -> tuple[Any, LineMap]:
    """The file's content and its keys' lines; `BadInput` (one line, naming the file and the line) otherwise."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise BadInput(f"{path}: the {what} is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str = "<profile>") -> tuple[Any, LineMap]:
    line_map = LineMap()
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, line_map)  # the reader checks the characters here already
        return loader.get_single_data(), line_map
    except yaml.reader.ReaderError as exc:
        line = text[: max(0, exc.position)].count("\n") + 1
        raise BadInput(f"{source}:{line}: not valid YAML: character #x{exc.character:04x} is not allowed") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise BadInput(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{source}: not valid YAML: {str(exc).splitlines()[0][:200]}") from None
    except RecursionError:
        raise BadInput(f"{source}: not valid YAML: nested too deep") from None
    finally:
        if loader is not None:
            loader.dispose()
