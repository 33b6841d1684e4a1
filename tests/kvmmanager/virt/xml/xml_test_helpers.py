"""Helpers shared by the XML model tests (a uniquely named module, safe to import)."""

from __future__ import annotations

from lxml import etree


def canonical(xml: str) -> str:
    """C14N with indentation whitespace dropped: equal means semantically the same tree."""
    parser = etree.XMLParser(remove_blank_text=True)
    root = etree.fromstring(xml.encode(), parser)
    return etree.tostring(root, method="c14n2", strip_text=True).decode()
