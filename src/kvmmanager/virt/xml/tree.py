"""lxml plumbing under the models: safe parsing, the tiny path language, and inserting or
removing elements so that an indented document stays indented and unknown nodes stay put.

Path syntax (relative to an element): ``"name"`` (text of a child), ``"@type"``
(attribute), ``"os/type/@arch"``, ``"."`` (own text), ``"listen[@type='address']/@address"``
(a step that only matches, and when created sets, that attribute) and ``"kvmm:tags/kvmm:tag"``
(prefixes resolved through a namespace map).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lxml import etree

from kvmmanager.core.errors import InvalidInput


def parse_xml(text: str | bytes, *, what: str = "xml") -> etree._Element:
    """Parse untrusted XML text into an element, refusing entities and network access."""
    if isinstance(text, str):
        # lxml refuses str input carrying an encoding declaration; bytes always works.
        text = text.encode("utf-8")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(text, parser)
    except etree.XMLSyntaxError as exc:
        raise InvalidInput(f"{what} is not well-formed XML: {exc}", field=what) from exc
    if root is None:
        raise InvalidInput(f"{what} is empty", field=what)
    return root


# ---------------------------------------------------------------------------------------------
# Paths

_STEP = re.compile(
    r"^(?:(?P<prefix>[A-Za-z_][\w.-]*):)?(?P<local>[A-Za-z_][\w.-]*)"
    r"(?:\[@(?P<pattr>[A-Za-z_][\w.-]*)='(?P<pval>[^']*)'\])?$"
)


@dataclass(frozen=True)
class Step:
    tag: str  # Clark notation: "{uri}local" or "local"
    prefix: str | None
    ns: str | None
    pattr: str | None = None
    pval: str | None = None

    def matches(self, el: Any) -> bool:
        return el.tag == self.tag and (self.pattr is None or el.get(self.pattr) == self.pval)


@dataclass(frozen=True)
class Path:
    steps: tuple[Step, ...]
    attr: str | None  # None: the value is the last element's text


def parse_step(text: str, nsmap: dict[str, str], where: str) -> Step:
    match = _STEP.match(text)
    if not match:
        raise ValueError(f"bad XML path step {text!r} in {where}")
    prefix = match.group("prefix")
    ns = None
    if prefix is not None:
        if prefix not in nsmap:
            raise ValueError(f"unknown namespace prefix {prefix!r} in {where}")
        ns = nsmap[prefix]
    local = match.group("local")
    tag = f"{{{ns}}}{local}" if ns else local
    return Step(tag, prefix, ns, match.group("pattr"), match.group("pval"))


def parse_path(path: str, nsmap: dict[str, str], where: str) -> Path:
    parts = [p for p in path.split("/") if p and p != "."]
    attr = None
    if parts and parts[-1].startswith("@"):
        attr = parts.pop()[1:]
    return Path(tuple(parse_step(p, nsmap, where) for p in parts), attr)


def find(el: Any, steps: Iterable[Step]) -> Any:
    # The hottest loop of every model read (the inventory reads each domain's XML through
    # it): lxml filters the children by tag in C instead of a Python test per child.
    for step in steps:
        pattr = step.pattr
        for child in el.iterchildren(step.tag):
            if pattr is None or child.get(pattr) == step.pval:
                el = child
                break
        else:
            return None
    return el


def is_element(node: Any) -> bool:
    return isinstance(node.tag, str)


def _indent_unit(parent: Any) -> str | None:
    """The whitespace that precedes children of ``parent``, when the document is indented."""
    text: str | None = parent.text
    if text is not None and text.strip() == "" and "\n" in text:
        return text
    return None


def _leading_whitespace(el: Any) -> str | None:
    """The indentation in front of ``el`` when it sits in an indented document."""
    prev = el.getprevious()
    parent = el.getparent()
    ws: str | None = (
        prev.tail if prev is not None else (parent.text if parent is not None else None)
    )
    if ws is not None and ws.strip() == "" and "\n" in ws:
        return ws
    return None


def insert(parent: Any, new: Any, order: list[str] | None) -> None:
    """Insert ``new`` under ``parent`` after its last sibling that sorts before it.

    Whitespace of an indented document is kept consistent so an edited, pretty-printed
    document stays readable; unknown siblings never move.
    """
    children = [c for c in parent if is_element(c)]
    anchor = None
    before = None
    if order and new.tag in order:
        rank = order.index(new.tag)
        for child in children:
            if child.tag in order and order.index(child.tag) <= rank:
                anchor = child
        if anchor is None:
            before = next((c for c in children if c.tag in order), None)
    else:
        anchor = children[-1] if children else None

    indent = _indent_unit(parent)
    if indent is None and not children:
        # First child of an element of an indented document: open the indentation.
        lead = _leading_whitespace(parent)
        if lead is not None:
            parent.text = lead + "  "
            new.tail = lead
            parent.append(new)
            if len(new):
                etree.indent(new, space="  ", level=len(parent.text.lstrip("\r\n")) // 2)
            return
    if before is not None:
        before.addprevious(new)
        if indent is not None:
            new.tail = indent
    elif anchor is not None:
        anchor.addnext(new)
        if indent is not None:
            new.tail = anchor.tail
            anchor.tail = indent
    else:
        parent.append(new)
    if indent is not None and len(new):
        etree.indent(new, space="  ", level=len(indent.lstrip("\r\n")) // 2)


def detach(el: Any) -> None:
    """Detach ``el`` keeping the surrounding indentation of the document."""
    parent = el.getparent()
    if parent is None:
        return
    prev = el.getprevious()
    if el.getnext() is None:
        if prev is not None:
            prev.tail = el.tail  # the last child's tail is the parent's closing indentation
        elif parent.text is not None and not parent.text.strip():
            parent.text = None  # no children left: drop the indentation inside the parent
    parent.remove(el)


def is_empty(el: Any, step: Step) -> bool:
    attrs = set(el.attrib) - ({step.pattr} if step.pattr else set())
    has_text = el.text is not None and el.text.strip() != ""
    return not attrs and not has_text and not any(is_element(c) for c in el)
