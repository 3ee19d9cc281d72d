"""Fixtures for the engine tests: the provisioned BlazePose models."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.models import DEFAULT_MODEL_DIR, ModelError, ModelFiles, locate_models

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_files() -> ModelFiles:
    """The models `make setup` provisioned in the default directory; fails the test if absent."""
    try:
        return locate_models(REPOSITORY_ROOT / DEFAULT_MODEL_DIR)
    except ModelError as error:
        pytest.fail(f"run `make setup` first (it fetches the models): {error}")
