"""The rules file: the shipped one loads, and every kind of bad input is rejected by key."""

from __future__ import annotations

import math
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from server.scoring import Exercise, LevelError, RulesError, create_scorer, load_rules
from server.scoring.rules import HandPosition, PushUpRules, level_rules

SHIPPED_TEXT = resources.files("server.scoring").joinpath("rules.toml").read_text(encoding="utf-8")


def test_shipped_rules_load_with_a_version_and_five_levels_each() -> None:
    rules = load_rules()
    assert rules.version
    assert tomllib.loads(SHIPPED_TEXT)["version"] == rules.version
    assert len(rules.push_up) == len(rules.sit_up) == len(rules.pull_up) == 5
    assert rules.sit_up[0].rest_s == math.inf
    assert rules.sit_up[4].hand_position is HandPosition.EITHER


def test_level_five_is_the_official_standard() -> None:
    level5 = level_rules(load_rules().push_up, 5)
    assert level5.depth_elbow_max_deg == 90.0
    assert level5.depth_shoulder_elbow_min == 0.0
    assert level5.body_line_min_deg == 160.0


def _edited(old: str, new: str, count: int = 1) -> str:
    assert old in SHIPPED_TEXT, old
    return SHIPPED_TEXT.replace(old, new, count)


def _level5_line(key: str) -> str:
    section = SHIPPED_TEXT[SHIPPED_TEXT.index("[pushup.level5]") :]
    match = re.search(rf"^{key} = .*$", section, re.MULTILINE)
    assert match is not None
    return match.group(0)


def _replace_in_level5(key: str, new_line: str) -> str:
    start = SHIPPED_TEXT.index("[pushup.level5]")
    line = _level5_line(key)
    return SHIPPED_TEXT[:start] + SHIPPED_TEXT[start:].replace(line, new_line, 1)


BAD_RULES = [
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", "depth_elbow_max_deg = 200.0"),
        "pushup.level5.depth_elbow_max_deg",
        id="angle-out-of-range",
    ),
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", 'depth_elbow_max_deg = "ninety"'),
        "pushup.level5.depth_elbow_max_deg",
        id="not-a-number",
    ),
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", "depth_elbow_max_deg = true"),
        "pushup.level5.depth_elbow_max_deg",
        id="boolean",
    ),
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", "depth_elbow_max_deg = nan"),
        "pushup.level5.depth_elbow_max_deg",
        id="nan",
    ),
    pytest.param(
        _replace_in_level5("body_line_tolerance_s", "body_line_tolerance_s = inf"),
        "pushup.level5.body_line_tolerance_s",
        id="infinite-where-not-allowed",
    ),
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", ""),
        "pushup.level5.depth_elbow_max_deg",
        id="missing-key",
    ),
    pytest.param(
        _replace_in_level5(
            "depth_elbow_max_deg", "depth_elbow_max_deg = 90.0\ndepth_elbow_typo = 1.0"
        ),
        "pushup.level5.depth_elbow_typo",
        id="unknown-key",
    ),
    pytest.param(
        _replace_in_level5("depth_elbow_max_deg", "depth_elbow_max_deg = 96.0"),
        "pushup.level5.depth_elbow_max_deg",
        id="level5-more-lenient-than-level4",
    ),
    pytest.param(
        _replace_in_level5("lockout_elbow_min_deg", "lockout_elbow_min_deg = 145.0"),
        "pushup.level5.lockout_elbow_min_deg",
        id="lockout-looser-than-level4",
    ),
    pytest.param(
        _replace_in_level5("pause_warning_s", "pause_warning_s = 9.0"),
        "pushup.level5.pause_warning_s",
        id="warning-after-its-violation",
    ),
    pytest.param(
        _edited('hand_position = "either"', 'hand_position = "on_knees"'),
        "situp.hand_position",
        id="unknown-hand-position",
    ),
    pytest.param(_edited("[pullup.level3]", "[pullup.level6]"), "pullup.level6", id="level6"),
    pytest.param(_edited('version = "', 'flavour = "'), "flavour", id="unknown-top-level"),
    pytest.param(_edited('version = "2025.1"', 'version = ""'), "version", id="empty-version"),
    pytest.param(SHIPPED_TEXT + "\n[pushup\n", "not valid TOML", id="broken-toml"),
]


@pytest.mark.parametrize(("text", "named"), BAD_RULES)
def test_invalid_rules_are_rejected_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as raised:
        load_rules(path)
    assert named in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_valid_override_is_used(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(_edited('version = "2025.1"', 'version = "site-7"'), encoding="utf-8")
    rules = load_rules(path)
    assert rules.version == "site-7"
    assert rules.source == str(path)


def test_a_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.toml")


@pytest.mark.parametrize("level", [0, 6, -1, True])
def test_levels_outside_one_to_five_are_refused(level: int) -> None:
    with pytest.raises(LevelError):
        create_scorer(Exercise.PUSH_UP, level, load_rules())


def test_rules_fields_match_the_file_exactly() -> None:
    names = set(PushUpRules.__dataclass_fields__)
    assert names == set(tomllib.loads(SHIPPED_TEXT)["pushup"]["level5"])
