"""Fixtures for the XML model tests: the sample XML files."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def rich_domain_xml() -> str:
    return (DATA / "rich-domain.xml").read_text()


@pytest.fixture
def data_dir() -> Path:
    return DATA
