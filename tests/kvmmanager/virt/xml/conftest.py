"""Fixtures for the XML model tests: the sample XML files and a canonical-form comparer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

DATA = Path(__file__).parent / "data"


def _canonical(xml: str) -> str:
    """C14N with indentation whitespace dropped: equal means semantically the same tree."""
    parser = etree.XMLParser(remove_blank_text=True)
    root = etree.fromstring(xml.encode(), parser)
    return etree.tostring(root, method="c14n2", strip_text=True).decode()


@pytest.fixture
def canonical() -> Callable[[str], str]:
    return _canonical


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def rich_domain_xml() -> str:
    return (DATA / "rich-domain.xml").read_text()
