"""`tree.find`, the lookup under every model read, against XPath's reading of the same path.

`find` filters children by tag in lxml (issue 19: the inventory reads every domain's XML
through it at start); its meaning must stay "the first child matching each step in turn",
which XPath spells `a[1]/b[@t='x'][1]`. Generated trees include comments, processing
instructions, namespaced children and repeated tags.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from kvmmanager.virt.xml.tree import find, parse_path

NS = "https://kvmmanager.org/xmlns/domain/1"
TAGS = ("a", "b", "c")
VALUES = ("x", "y")


@st.composite
def trees(draw: st.DrawFn, depth: int = 3) -> etree._Element:
    def build(tag: str, level: int) -> etree._Element:
        el = etree.Element(tag, nsmap={"kvmm": NS})
        if draw(st.booleans()):
            el.set("t", draw(st.sampled_from(VALUES)))
        if level == 0:
            return el
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(("el", "el", "ns", "comment", "pi")))
            if kind == "comment":
                el.append(etree.Comment("c"))
            elif kind == "pi":
                el.append(etree.ProcessingInstruction("p"))
            else:
                local = draw(st.sampled_from(TAGS))
                el.append(build(f"{{{NS}}}{local}" if kind == "ns" else local, level - 1))
        return el

    return build("root", depth)


@st.composite
def paths(draw: st.DrawFn) -> tuple[str, str]:
    """A model path and the XPath that means the same."""
    model, xpath = [], []
    for _ in range(draw(st.integers(1, 3))):
        prefix = draw(st.sampled_from(("", "kvmm:")))
        local = draw(st.sampled_from(TAGS))
        value = draw(st.sampled_from((None, *VALUES)))
        pred = "" if value is None else f"[@t='{value}']"
        model.append(f"{prefix}{local}{pred}")
        xpath.append(f"{prefix}{local}{pred}[1]")
    return "/".join(model), "/".join(xpath)


@settings(max_examples=300, deadline=None)
@given(root=trees(), path=paths())
def test_find_is_the_first_match_of_each_step_in_turn(
    root: etree._Element, path: tuple[str, str]
) -> None:
    model_path, xpath = path
    steps = parse_path(model_path, {"kvmm": NS}, "test").steps
    expected = root.xpath(xpath, namespaces={"kvmm": NS})
    assert find(root, steps) is (expected[0] if expected else None)
