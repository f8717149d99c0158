"""Input validation of the Chime SDK meetings surface, driven by botocore's own service model.

The model (botocore/data/chime-sdk-meetings/*/service-2.json, shipped with botocore, a dependency)
is the reference for every shape: required members, string lengths, patterns and enums, integer
ranges, list sizes. A request that breaks one is a BadRequestException whose message reads like
AWS's ("1 validation error detected: Value ... at 'meetingId' failed to satisfy constraint: ...").
Patterns are matched against the whole value (the model's GUID pattern has no anchors; AWS refuses
"abc" as a MeetingId).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

from botocore.model import ListShape, OperationModel, ServiceModel, Shape, StructureShape

from callscribe.api.errors import ApiError

SERVICE = "chime-sdk-meetings"
SIGNING_NAME = "chime"


@functools.lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE)


def operation(name: str) -> OperationModel:
    return service_model().operation_model(name)


@functools.lru_cache(maxsize=64)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.removeprefix("^").removesuffix("$"))


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _problems(shape: Shape, value: Any, where: str, out: list[str]) -> None:
    meta = shape.metadata
    shown = repr(value) if not isinstance(value, (dict, list)) else "[...]"
    if shape.type_name == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            out.append(f"Value at '{where}' failed to satisfy constraint: Member must be an object")
            return
        for name in shape.required_members:
            if value.get(name) is None:
                out.append(f"Value null at '{_join(where, name)}' failed to satisfy constraint: "
                           "Member must not be null")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _problems(member, value[name], _join(where, name), out)
    elif shape.type_name == "list":
        assert isinstance(shape, ListShape)
        if not isinstance(value, list):
            out.append(f"Value at '{where}' failed to satisfy constraint: Member must be a list")
            return
        if "min" in meta and len(value) < meta["min"] or "max" in meta and len(value) > meta["max"]:
            out.append(f"Value at '{where}' failed to satisfy constraint: Member must have length between "
                       f"{meta.get('min', 0)} and {meta.get('max', 'any')}")
        for i, item in enumerate(value):
            _problems(shape.member, item, f"{where}.{i + 1}.member", out)
    elif shape.type_name == "string":
        if not isinstance(value, str):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must be a string")
            return
        shown = "'***'" if meta.get("sensitive") else repr(value[:80])
        if ("min" in meta and len(value) < meta["min"]) or ("max" in meta and len(value) > meta["max"]):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must have length "
                       f"between {meta.get('min', 0)} and {meta.get('max', 'any')}")
        elif shape.enum and value not in shape.enum:
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must satisfy enum "
                       f"value set: [{', '.join(shape.enum)}]")
        elif "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must satisfy regular "
                       f"expression pattern: {meta['pattern']}")
    elif shape.type_name in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must be an integer")
        elif ("min" in meta and value < meta["min"]) or ("max" in meta and value > meta["max"]):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must have value "
                       f"between {meta.get('min')} and {meta.get('max')}")
    elif shape.type_name == "boolean":
        if not isinstance(value, bool):
            out.append(f"Value {shown} at '{where}' failed to satisfy constraint: Member must be a boolean")


def _join(where: str, name: str) -> str:
    return f"{where}.{_camel(name)}" if where else _camel(name)


def parse_input(op_name: str, path: Mapping[str, str], query: Mapping[str, str], body: Any) -> dict[str, Any]:
    """The operation's input as one dict (path, query and body members by their model names), or
    ApiError 400 BadRequestException listing what breaks the model."""
    shape = operation(op_name).input_shape
    assert shape is not None and isinstance(shape, StructureShape)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequestException", "The request body must be a JSON object")
    value: dict[str, Any] = {}
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri":
            if wire in path:
                value[name] = path[wire]
        elif location == "querystring":
            if wire in query:
                raw = query[wire]
                if member.type_name == "integer":
                    if not re.fullmatch(r"-?\d{1,10}", raw):
                        raise ApiError(400, "BadRequestException", f"{wire} must be an integer")
                    value[name] = int(raw)
                else:
                    value[name] = raw
        elif location is None and name in body:
            value[name] = body[name]
    out: list[str] = []
    _problems(shape, value, "", out)
    if out:
        head = f"{len(out)} validation error{'s' if len(out) > 1 else ''} detected: "
        raise ApiError(400, "BadRequestException", head + "; ".join(out[:10]))
    return value
