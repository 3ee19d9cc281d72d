"""Judging thresholds per exercise and level, loaded from a versioned TOML file and validated.

The shipped ``rules.toml`` is the default; ``load_rules(path)`` reads an override. Every key must
be present and known, every number in range, a warning never later than its violation, and each
level at least as strict as the one below it (level 5, the official standard, is the strictest),
so a stricter level can never count more repetitions than a more lenient one. Errors name the
offending key: ``RulesError("rules.toml: key 'pushup.level5.depth_elbow_max_deg' ...")``.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, fields
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

LEVELS = (1, 2, 3, 4, 5)
DEFAULT_LEVEL = 5


class ScoringError(Exception):
    """Base class of the scoring package's errors."""


class RulesError(ScoringError):
    """A rules file is unreadable or invalid; the message names the offending key."""


class LevelError(ScoringError):
    """A difficulty level outside 1..5."""


class Stricter(Enum):
    """Which way a threshold moves as the level rises."""

    LOWER = "lower"
    HIGHER = "higher"
    EITHER = "either"


class HandPosition(Enum):
    """Where a sit-up's hands must stay (domain.md §3: 2018 style or hands behind the head)."""

    BEHIND_HEAD = "behind_head"
    CROSSED_ON_CHEST = "crossed_on_chest"
    EITHER = "either"


def threshold(
    *,
    minimum: float,
    maximum: float,
    stricter: Stricter,
    infinite: bool = False,
    warning_for: str | None = None,
) -> Any:
    """A numeric rules field with its valid range and its direction of strictness."""
    return field(
        metadata={
            "minimum": minimum,
            "maximum": maximum,
            "stricter": stricter,
            "infinite": infinite,
            "warning_for": warning_for,
        }
    )


def angle(stricter: Stricter) -> Any:
    """An angle threshold in degrees."""
    return threshold(minimum=0.0, maximum=180.0, stricter=stricter)


def seconds(stricter: Stricter, *, infinite: bool = False, warning_for: str | None = None) -> Any:
    """A duration in seconds; ``inf`` allowed where ``infinite`` (the limit is off)."""
    return threshold(
        minimum=0.0, maximum=3600.0, stricter=stricter, infinite=infinite, warning_for=warning_for
    )


@dataclass(frozen=True)
class PushUpRules:
    depth_elbow_max_deg: float = angle(Stricter.LOWER)
    depth_shoulder_elbow_min: float = threshold(minimum=-2.0, maximum=2.0, stricter=Stricter.HIGHER)
    lockout_elbow_min_deg: float = angle(Stricter.HIGHER)
    body_line_min_deg: float = angle(Stricter.HIGHER)
    body_line_tolerance_s: float = seconds(Stricter.LOWER)
    start_hold_s: float = seconds(Stricter.HIGHER)
    pause_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="pause_s")
    pause_s: float = seconds(Stricter.LOWER, infinite=True)
    rest_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="rest_s")
    rest_s: float = seconds(Stricter.LOWER, infinite=True)
    knee_down_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="knee_down_s")
    knee_down_s: float = seconds(Stricter.LOWER, infinite=True)
    not_visible_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="leave_s")
    leave_s: float = seconds(Stricter.LOWER, infinite=True)


@dataclass(frozen=True)
class SitUpRules:
    up_hip_max_deg: float = angle(Stricter.LOWER)
    down_torso_max_deg: float = threshold(minimum=0.0, maximum=60.0, stricter=Stricter.LOWER)
    hands_max_ratio: float = threshold(minimum=0.0, maximum=5.0, stricter=Stricter.LOWER)
    hip_lift_max_ratio: float = threshold(minimum=0.0, maximum=5.0, stricter=Stricter.LOWER)
    form_tolerance_s: float = seconds(Stricter.LOWER)
    start_hold_s: float = seconds(Stricter.HIGHER)
    rest_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="rest_s")
    rest_s: float = seconds(Stricter.LOWER, infinite=True)
    not_visible_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="leave_s")
    leave_s: float = seconds(Stricter.LOWER, infinite=True)
    hand_position: HandPosition = HandPosition.EITHER
    """Set once per exercise (``situp.hand_position``), not per level."""


@dataclass(frozen=True)
class PullUpRules:
    chin_clearance_min: float = threshold(minimum=-2.0, maximum=2.0, stricter=Stricter.HIGHER)
    lockout_elbow_min_deg: float = angle(Stricter.HIGHER)
    swing_max_ratio: float = threshold(minimum=0.0, maximum=5.0, stricter=Stricter.LOWER)
    start_hold_s: float = seconds(Stricter.HIGHER)
    pause_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="pause_s")
    pause_s: float = seconds(Stricter.LOWER, infinite=True)
    off_bar_s: float = seconds(Stricter.LOWER)
    not_visible_warning_s: float = seconds(Stricter.EITHER, infinite=True, warning_for="leave_s")
    leave_s: float = seconds(Stricter.LOWER, infinite=True)


LevelRules = PushUpRules | SitUpRules | PullUpRules
RulesType = TypeVar("RulesType", PushUpRules, SitUpRules, PullUpRules)


@dataclass(frozen=True)
class Rules:
    """All thresholds: one entry per level (index 0 = level 1) for each exercise."""

    version: str
    source: str
    push_up: tuple[PushUpRules, ...]
    sit_up: tuple[SitUpRules, ...]
    pull_up: tuple[PullUpRules, ...]


def level_rules(levels: tuple[RulesType, ...], level: int) -> RulesType:
    """The thresholds of ``level`` (1..5); LevelError outside."""
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise LevelError(f"level must be one of {LEVELS}, got {level!r}")
    return levels[level - 1]


SHIPPED_RULES = "rules.toml"
EXERCISE_TABLES = {"pushup": PushUpRules, "situp": SitUpRules, "pullup": PullUpRules}
EXERCISE_OPTIONS = {"situp": {"hand_position"}}


def load_rules(path: Path | None = None) -> Rules:
    """Read and validate a rules file; the shipped one when ``path`` is None."""
    if path is None:
        source = f"{__package__}/{SHIPPED_RULES}"
        text = resources.files(__package__).joinpath(SHIPPED_RULES).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise RulesError(f"{source}: cannot read the rules file: {error}") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{source}: not valid TOML: {error}") from error
    return parse_rules(document, source)


def parse_rules(document: dict[str, Any], source: str) -> Rules:
    """Validate a decoded rules document."""
    _reject_unknown(document, {"version", *EXERCISE_TABLES}, "", source)
    version = document.get("version")
    if not isinstance(version, str) or not version.strip():
        raise RulesError(f"{source}: key 'version' must be a non-empty string")
    push_up = _parse_exercise(document, "pushup", PushUpRules, source)
    sit_up = _parse_exercise(document, "situp", SitUpRules, source)
    pull_up = _parse_exercise(document, "pullup", PullUpRules, source)
    return Rules(version, source, push_up, sit_up, pull_up)


def _parse_exercise(
    document: dict[str, Any], name: str, rules_type: type[RulesType], source: str
) -> tuple[RulesType, ...]:
    table = document.get(name)
    if not isinstance(table, dict):
        raise RulesError(f"{source}: key '{name}' must be a table")
    options = EXERCISE_OPTIONS.get(name, set())
    level_keys = {f"level{level}" for level in LEVELS}
    _reject_unknown(table, level_keys | options, f"{name}.", source)
    extra: dict[str, Any] = {}
    if "hand_position" in options:
        raw = table.get("hand_position", HandPosition.EITHER.value)
        try:
            extra["hand_position"] = HandPosition(raw)
        except ValueError:
            choices = ", ".join(repr(choice.value) for choice in HandPosition)
            raise RulesError(
                f"{source}: key '{name}.hand_position' must be one of {choices}, got {raw!r}"
            ) from None
    parsed: list[RulesType] = []
    for level in LEVELS:
        prefix = f"{name}.level{level}"
        level_table = table.get(f"level{level}")
        if not isinstance(level_table, dict):
            raise RulesError(f"{source}: key '{prefix}' must be a table")
        values: dict[str, Any] = {**_parse_level(level_table, rules_type, prefix, source), **extra}
        parsed.append(rules_type(**values))
    _check_levels_tighten(parsed, name, source)
    return tuple(parsed)


def _numeric_fields(rules_type: type[LevelRules]) -> list[Any]:
    return [spec for spec in fields(rules_type) if "stricter" in spec.metadata]


def _parse_level(
    table: dict[str, Any], rules_type: type[LevelRules], prefix: str, source: str
) -> dict[str, float]:
    specs = _numeric_fields(rules_type)
    _reject_unknown(table, {spec.name for spec in specs}, f"{prefix}.", source)
    values: dict[str, float] = {}
    for spec in specs:
        key = f"{prefix}.{spec.name}"
        if spec.name not in table:
            raise RulesError(f"{source}: key '{key}' is missing")
        raw = table[spec.name]
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise RulesError(f"{source}: key '{key}' must be a number, got {raw!r}")
        value = float(raw)
        meta = spec.metadata
        if math.isnan(value) or (math.isinf(value) and not (meta["infinite"] and value > 0)):
            raise RulesError(f"{source}: key '{key}' must be a finite number, got {raw!r}")
        if value < meta["minimum"] or (math.isfinite(value) and value > meta["maximum"]):
            raise RulesError(
                f"{source}: key '{key}' must lie in [{meta['minimum']}, {meta['maximum']}],"
                f" got {value}"
            )
        values[spec.name] = value
    for spec in specs:
        limit_name = spec.metadata["warning_for"]
        if limit_name is not None and values[spec.name] > values[limit_name]:
            raise RulesError(
                f"{source}: key '{prefix}.{spec.name}' ({values[spec.name]}) must not exceed"
                f" '{prefix}.{limit_name}' ({values[limit_name]}): the warning comes first"
            )
    return values


def _check_levels_tighten(levels: list[RulesType], name: str, source: str) -> None:
    for spec in _numeric_fields(type(levels[0])):
        stricter = spec.metadata["stricter"]
        if stricter is Stricter.EITHER:
            continue
        for lower_level, (easier, harder) in enumerate(itertools.pairwise(levels), 1):
            easier_value = getattr(easier, spec.name)
            harder_value = getattr(harder, spec.name)
            looser = (
                harder_value > easier_value
                if stricter is Stricter.LOWER
                else harder_value < easier_value
            )
            if looser:
                relation = "≤" if stricter is Stricter.LOWER else "≥"
                raise RulesError(
                    f"{source}: key '{name}.level{lower_level + 1}.{spec.name}' ({harder_value})"
                    f" must be {relation} level {lower_level}'s ({easier_value}):"
                    " a higher level is never more lenient"
                )


def _reject_unknown(table: dict[str, Any], known: set[str], prefix: str, source: str) -> None:
    for key in table:
        if key not in known:
            raise RulesError(f"{source}: unknown key '{prefix}{key}'")
