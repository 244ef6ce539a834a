"""Tiny real checkpoints, built once per test session (tests/detectors/tiny_models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.detectors.tiny_models import build_detoxify_checkpoint, build_nli_model


@pytest.fixture(scope="session")
def detoxify_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_detoxify_checkpoint(tmp_path_factory.mktemp("detoxify"))


@pytest.fixture(scope="session")
def nli_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nli_model(tmp_path_factory.mktemp("nli"))
