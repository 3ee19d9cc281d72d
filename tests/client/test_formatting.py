"""Readable lines of the `fitscore` CLI: the pieces that scripted events do not reach."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from client import assessment_pb2 as pb
from client import formatting


@pytest.mark.parametrize(
    ("nanoseconds", "expected"),
    [
        (0, "00:00.0"),
        (12_440_000_000, "00:12.4"),
        (12_450_000_001, "00:12.5"),
        (59_960_000_000, "01:00.0"),  # rounds before splitting, never "00:60.0"
        (7_325_000_000_000, "122:05.0"),
        (-1_500_000_000, "-00:01.5"),
    ],
)
def test_media_offset(nanoseconds: int, expected: str) -> None:
    offset = duration_pb2.Duration()
    offset.FromNanoseconds(nanoseconds)

    assert formatting.format_media_offset(offset) == expected


def test_enum_label_strips_the_prefix_and_survives_unknown_values() -> None:
    assert formatting.enum_label(pb.FoulCode.DESCRIPTOR, pb.FOUL_CODE_HIPS_SAGGING) == (
        "HIPS_SAGGING"
    )
    assert formatting.enum_label(pb.EndReason.DESCRIPTOR, 99) == "UNKNOWN(99)"


def test_measures_pair_the_elbow_angles_and_list_the_rest_by_name() -> None:
    measures = {
        "shoulder_elbow_depth": 0.125,
        "lockout_elbow_angle_deg": 171.4,
        "min_body_line_angle_deg": 167.6,
        "min_elbow_angle_deg": 81.6,
    }

    assert formatting.format_measures(measures) == (
        "elbow 82°→171°, min body line angle 168°, shoulder elbow depth 0.12"
    )


def test_fouls_most_frequent_first() -> None:
    fouls = {"FOUL_CODE_HIPS_SAGGING": 1, "FOUL_CODE_NOT_LOW_ENOUGH": 3, "FOUL_CODE_BOUNCE": 1}

    assert formatting.format_fouls(fouls) == "{NOT_LOW_ENOUGH: 3, BOUNCE: 1, HIPS_SAGGING: 1}"
    assert formatting.format_fouls({}) == "{}"


def test_progress_against_a_duration_shows_seconds() -> None:
    event = pb.AssessmentEvent(progress=pb.Progress(frames_received=40, rep_count=1))
    event.progress.elapsed.FromMilliseconds(30_000)
    event.media_offset.FromMilliseconds(30_000)
    target = pb.Assessment()
    target.duration.FromSeconds(120)

    assert formatting.format_event(event, target) == "00:30.0  progress  1 rep  30.0/120.0 s"
    assert formatting.format_event(event) == "00:30.0  progress  1 rep  40 frames"


def test_foul_without_detail_shows_its_measures() -> None:
    foul = pb.Foul(code=pb.FOUL_CODE_ARMS_NOT_EXTENDED)
    foul.evidence.measures["lockout_elbow_angle_deg"] = 151.0
    event = pb.AssessmentEvent(foul=foul)

    assert formatting.format_event(event) == "foul ARMS_NOT_EXTENDED  (lockout elbow angle 151°)"


def test_an_event_kind_newer_than_the_client_still_prints() -> None:
    assert formatting.format_event(pb.AssessmentEvent(sequence=9)) == (
        "event 9: a kind this client does not know"
    )
