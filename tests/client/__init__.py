"""Tests of the `fitscore` command-line client against a fake AssessmentService."""
