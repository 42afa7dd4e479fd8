"""Fixtures of the model tests: tiny random-weight models of every hf: family, saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import FAMILIES, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Every family saved once per session: family -> folder."""
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: save_tiny_model(family, root / family) for family in FAMILIES}
