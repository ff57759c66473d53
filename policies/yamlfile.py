"""Load YAML files keeping line numbers, and turn pydantic errors into messages that point into the file.

Files come from users who may not have read the README, or from someone hostile: reading is bounded in bytes,
nesting depth and alias expansion before anything is built, so a "billion laughs" document or a 10,000-deep list
costs milliseconds and one paragraph instead of gigabytes or a RecursionError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
Location = tuple[str | int, ...]

# libyaml's parser is ~20x faster than the pure-Python one; the pure one serves where the C extension is missing.
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlLimits:
    """How much of a YAML file AssetMint will read: bytes on disk, nesting depth, values added by aliases."""

    max_bytes: int
    max_depth: int = 32
    max_alias_values: int = 10_000


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


class _BoundedInputError(Exception):
    """The document breaks a YAML limit; carries the 0-based line where that became clear."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def _check_shape(text: str, limits: YamlLimits) -> None:
    """Walk the parser's events (no objects built) and refuse deep nesting, recursive or explosive aliases."""
    open_collections: list[list[Any]] = []  # [values so far, anchor] per open sequence/mapping
    sizes: dict[str, int] = {}
    alias_values = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        size = 0
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_collections) >= limits.max_depth:
                raise _BoundedInputError(
                    event.start_mark.line, f"nesting is deeper than {limits.max_depth} levels; flatten the document"
                )
            open_collections.append([1, event.anchor])
        elif isinstance(event, yaml.CollectionEndEvent):
            size, anchor = open_collections.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for _, anchor in open_collections):
                raise _BoundedInputError(
                    event.start_mark.line, f"alias *{event.anchor} refers to a value that contains it (recursive)"
                )
            size = sizes.get(event.anchor, 0)  # an undefined alias is reported by the composer
            alias_values += size
            if alias_values > limits.max_alias_values:
                raise _BoundedInputError(
                    event.start_mark.line,
                    f"aliases expand to more than {limits.max_alias_values:,} values (a YAML alias bomb?); "
                    "write the values out or use fewer aliases",
                )
        if size and open_collections:
            open_collections[-1][0] += size


_KINDS = {int: "a number", float: "a number", bool: "true/false", type(None): "null"}


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that refuses duplicate and non-text mapping keys instead of silently keeping or coercing them."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)  # resolve `<<` merge keys first, as the base constructor does
    seen: set[str] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain word, not a list or mapping", key_node.start_mark
            )
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            kind = _KINDS.get(type(key), "a value")
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"mapping key {key_node.value!r} must be text, but YAML reads it as {kind}; "
                f"quote it ('{key_node.value}') if it is meant as a name",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_bounded(path: Path, error: type[Exception], what: str, max_bytes: int) -> str:
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a directory, not a YAML file.") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror or exc}.") from None
    if len(raw) > max_bytes:
        raise error(
            f"{what} {path} is larger than {max_bytes // 1024:,} KiB; a {what} that big is a mistake or a generated "
            "file. Split the batch into several files."
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded).") from None


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


def load_yaml(path: Path, error: type[Exception], what: str, limits: YamlLimits) -> LoadedYaml:
    """Read and parse a YAML file within `limits`; raise `error` naming the file, line and problem when that fails."""
    text = _read_bounded(path, error, what, limits.max_bytes)
    if "\x00" in text:
        raise error(f"{what} {path} contains a NUL byte; it is not a text file.")
    loader = _UniqueKeyLoader(text)
    try:
        _check_shape(text, limits)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _BoundedInputError as exc:
        raise error(f"{path}:{exc.line + 1}: {what} is refused: {exc}.") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise error(f"{where}: {what} is not valid YAML: {exc.problem or exc}.") from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: {what} is not valid YAML: {exc}.") from None
    finally:
        loader.dispose()
    lines: dict[Location, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return LoadedYaml(path=path, data=data, lines=lines)


def _format_location(location: Location) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")  # user:password@ in a URL: never echo the password
_INT_ERRORS = {"int_parsing_size", "int_from_float", "int_parsing", "int_type"}


def _schema_at(schema: dict[str, Any], location: Location) -> dict[str, Any] | None:
    """The JSON Schema of the value at `location`, following $refs, lists, maps and optional values."""
    definitions = schema.get("$defs", {})
    node: dict[str, Any] | None = schema
    for part in location:
        if node is None:
            return None
        node = _resolve(node, definitions)
        if isinstance(part, int):
            node = node.get("items")
        else:
            properties = node.get("properties", {})
            node = properties.get(part, node.get("additionalProperties"))
            node = node if isinstance(node, dict) else None
    return _resolve(node, definitions) if node is not None else None


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = definitions.get(node["$ref"].rsplit("/", 1)[-1], {})
    for option in node.get("anyOf", []):
        if option.get("type") not in (None, "null") or "$ref" in option:
            return _resolve(option, definitions)
    return node


def _allowed_range(model: type[BaseModel], location: Location) -> str:
    node = _schema_at(model.model_json_schema(), location)
    if node is None or ("minimum" not in node and "maximum" not in node):
        return ""
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f"; allowed: a whole number in {low}..{high}"
    return f"; allowed: a whole number >= {low}" if low is not None else f"; allowed: a whole number <= {high}"


def _describe(error: dict[str, Any], model: type[BaseModel], location: Location) -> str:
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid value"))
    if kind == "extra_forbidden":
        return "unknown key"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "int_parsing_size":
        message = "is not a whole number in range"
    if kind in _INT_ERRORS:
        message += _allowed_range(model, location)
    value = error.get("input")
    if kind != "missing" and not isinstance(value, (dict, list)):
        shown = _URL_PASSWORD.sub(r"\1***@", repr(value))
        message += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"
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
            problems.append(f"{where}: {_format_location(location)}: {_describe(item, model, location)}")
        count = len(problems)
        header = f"{what} {loaded.path} has {count} problem{'s' if count != 1 else ''}:"
        raise error("\n".join([header, *("  " + p for p in problems)])) from None


def json_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file format described by a pydantic model."""
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://assetmint.dev/schemas/{name}.json"
    return schema
