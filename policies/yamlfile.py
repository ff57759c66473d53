"""Load YAML files keeping line numbers, and turn pydantic errors into messages that point into the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
Location = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedYaml:
    """A parsed YAML document and the line (1-based) where each key path starts."""

    path: Path
    data: Any
    lines: dict[Location, int]

    def line_of(self, location: Location) -> int | None:
        """The line of the deepest known prefix of `location`."""
        for end in range(len(location), -1, -1):
            line = self.lines.get(tuple(location[:end]))
            if line is not None:
                return line
        return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _index_lines(node: yaml.Node, location: Location, lines: dict[Location, int]) -> None:
    lines.setdefault(location, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*location, str(key_node.value))
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*location, index), lines)


def load_yaml(path: Path, error: type[Exception], what: str) -> LoadedYaml:
    """Read and parse a YAML file; raise `error` naming the file, line and problem when that fails."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a YAML file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} cannot be read: {exc}.") from None
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise error(f"{where}: {what} is not valid YAML: {exc.problem or exc}.") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: {what} is not valid YAML: {exc}.") from None
    lines: dict[Location, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return LoadedYaml(path=path, data=data, lines=lines)


def _format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown key"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    value = error.get("input")
    if kind != "missing" and not isinstance(value, (dict, list)):
        message += f" (got {value!r})"
    return message


def validate_yaml(loaded: LoadedYaml, model: type[ModelT], error: type[Exception], what: str) -> ModelT:
    """Validate parsed YAML against a pydantic model; raise `error` listing each problem as file:line: field: why."""
    if not isinstance(loaded.data, dict):
        raise error(
            f"{loaded.path}: {what} must be a YAML mapping of keys to values, got {type(loaded.data).__name__}."
        )
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            location = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            line = loaded.line_of(location)
            where = f"{loaded.path}:{line}" if line else str(loaded.path)
            problems.append(f"{where}: {_format_location(location)}: {_describe(item)}")
        count = len(problems)
        header = f"{what} {loaded.path} has {count} problem{'s' if count != 1 else ''}:"
        raise error("\n".join([header, *("  " + p for p in problems)])) from None


def json_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file format described by a pydantic model."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://assetmint.dev/schemas/{name}.json"
    return schema
