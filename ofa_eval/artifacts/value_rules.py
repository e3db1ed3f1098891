"""Rules for single JSON values, and for objects and lists of them, as the manifest checks use them.

A rule takes a value and returns what is wrong with it ("is ..., not ...") or None; a `Record`
names an object's fields and their rules, `Records` a list of such objects; `field_problems`
applies them, naming each problem's place in the object ("snapshots[2].step is ...").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

INT64 = 2**63 - 1  # the store's BIGINT columns


Rule = Callable[[object], "str | None"]


def shown(value) -> str:
    written = json.dumps(value) if not isinstance(value, str) else repr(value)
    return written if len(written) <= 60 else written[:57] + "..."


def is_number(value) -> bool:
    return type(value) in (int, float)


def integer(minimum: int | None = None, maximum: int = INT64) -> Rule:
    def rule(value):
        if type(value) is not int:
            return f"is {shown(value)}, not an integer"
        if minimum is not None and value < minimum:
            return f"is {value}, less than {minimum}"
        if value > maximum or value < -maximum - 1:
            return f"is {value}, outside {-maximum - 1}..{maximum}"
        return None
    return rule


def number(minimum: float | None = None, maximum: float | None = None, positive: bool = False) -> Rule:
    def rule(value):
        if not is_number(value):
            return f"is {shown(value)}, not a number"
        if not math.isfinite(value):
            return f"is {shown(value)}, not a finite number"
        if positive and value <= 0:
            return f"is {value}, not positive"
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            low, high = ("-inf" if minimum is None else minimum), ("inf" if maximum is None else maximum)
            return f"is {value}, outside {low}..{high}"
        return None
    return rule


def text(value):
    return None if isinstance(value, str) and value.strip() else f"is {shown(value)}, not a non-empty string"


def choice(*choices: str) -> Rule:
    def rule(value):
        if isinstance(value, str) and value in choices:
            return None
        return f"is {shown(value)}, not one of {', '.join(choices)}"
    return rule


def _is_file_text(value) -> bool:
    """A string that can be (part of) a file name: non-empty, no NUL, encodable."""
    return isinstance(value, str) and bool(value) and "\0" not in value and value.isprintable()


def plain_name(value):
    """A name that becomes part of file names: no folders, nothing that climbs out of one."""
    if not _is_file_text(value) or value in (".", "..") or any(c in value for c in "/\\"):
        return f"is {shown(value)}, not a plain name (it becomes part of file names)"
    return None


def sha256(value):
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return None
    return f"is {shown(value)}, not a SHA-256 hex digest"


def relative_path(value):
    """A path inside the run folder, relative to it."""
    if not _is_file_text(value):
        return f"is {shown(value)}, not a path"
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        return f"is {shown(value)}, an absolute path (paths are relative to the run folder)"
    if ".." in PurePosixPath(value.replace("\\", "/")).parts:
        return f"is {shown(value)}, a path that leaves the run folder"
    return None


def label_names(value):
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v for v in value)):
        return f"is {shown(value)}, not a list of non-empty strings"
    if len(set(value)) < len(value):
        return f"names {next(v for v in value if value.count(v) > 1)!r} twice"
    return None


def optional(rule: Rule) -> Rule:
    return lambda value: None if value is None else rule(value)


@dataclass(frozen=True)
class Record:
    """A JSON object with these fields ({key: (required, rule)}); `nullable`: null is fine too."""

    fields: dict
    nullable: bool = False


@dataclass(frozen=True)
class Records:
    """A JSON list of `Record`s."""

    record: Record


def field_problems(record: dict, fields: dict, where: str) -> list[str]:
    """What is wrong with `record`'s fields ({key: (required, rule)}), each named `where` + key."""
    problems = []
    for key, (required, rule) in fields.items():
        if key in record:
            problems += _value_problems(record[key], rule, f"{where}{key}")
        elif required:
            problems.append(f"{where}{key} is missing")
    return problems


def _value_problems(value, rule, label: str) -> list[str]:
    if isinstance(rule, Records):
        if not isinstance(value, list):
            return [f"{label} is {shown(value)}, not a list"]
        return [p for n, item in enumerate(value) for p in _value_problems(item, rule.record, f"{label}[{n}]")]
    if isinstance(rule, Record):
        if value is None and rule.nullable:
            return []
        if not isinstance(value, dict):
            return [f"{label} is {shown(value)}, not an object"]
        return field_problems(value, rule.fields, f"{label}.")
    problem = rule(value)
    return [f"{label} {problem}"] if problem else []
