"""The declarative machinery itself: paths, types, creation order, removal, errors."""

from __future__ import annotations

import pytest

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.base import (
    XMLChild,
    XMLChildList,
    XMLObject,
    XMLProperty,
    XMLSizeProperty,
    XMLValueList,
    bytes_to_kib,
    parse_size,
    parse_xml,
    size_to_bytes,
)


class Leaf(XMLObject):
    TAG = "leaf"
    value = XMLProperty("@value")


class Thing(XMLObject):
    TAG = "thing"
    NSMAP = {"ex": "https://example.org/ns"}

    kind = XMLProperty("@kind", choices=("a", "b"))
    first = XMLProperty("first")
    count = XMLProperty("second/@count", kind=int, minimum=0)
    enabled = XMLProperty("second/@enabled", kind=bool)
    power = XMLProperty("third/@state", kind=bool, bools=("on", "off"))
    flag = XMLProperty("flag", present=True)
    size = XMLSizeProperty("size", unit="KiB")
    listen = XMLProperty("listen[@type='address']/@address")
    names = XMLValueList("names/name")
    extra = XMLProperty("ex:extra/@v")
    child = XMLChild(Leaf, "holder/leaf")
    leaves = XMLChildList(Leaf)
    state = XMLProperty("@state", readonly=True)


def test_new_object_builds_elements_in_declared_order() -> None:
    t = Thing()
    t.flag = True
    t.count = 3
    t.first = "one"
    t.kind = "a"
    assert t.to_xml(pretty=False) == (
        '<thing kind="a"><first>one</first><second count="3"/><flag/></thing>'
    )


def test_typed_values_round_trip() -> None:
    t = Thing(enabled=True, power=False, count=0, size=2048)
    assert t.enabled is True and t.power is False and t.count == 0 and t.size == 2048
    assert 'enabled="yes"' in t.to_xml() and 'state="off"' in t.to_xml()
    assert '<size unit="KiB">2048</size>' in t.to_xml()


def test_setting_none_removes_and_cleans_empty_parents() -> None:
    t = Thing(count=1, enabled=True)
    t.count = None
    assert t.to_xml(pretty=False) == '<thing><second enabled="yes"/></thing>'
    t.enabled = None
    assert t.to_xml(pretty=False) == "<thing/>"
    t.flag = True
    t.flag = False
    assert t.to_xml(pretty=False) == "<thing/>"


def test_predicate_step_matches_and_creates() -> None:
    t = Thing.from_xml("<thing><listen type='socket'/></thing>")
    assert t.listen is None
    t.listen = "127.0.0.1"
    assert t.to_xml(pretty=False) == (
        '<thing><listen type="socket"/><listen type="address" address="127.0.0.1"/></thing>'
    )
    t.listen = None
    assert t.to_xml(pretty=False) == '<thing><listen type="socket"/></thing>'


def test_value_list_replaces_in_place() -> None:
    t = Thing.from_xml("<thing><first>x</first><names><name>a</name></names><z/></thing>")
    assert t.names == ["a"]
    t.names = ["b", "c"]
    assert t.names == ["b", "c"]
    assert t.to_xml().startswith("<thing><first>x</first><names><name>b</name><name>c</name>")
    t.names = []
    assert t.to_xml(pretty=False) == "<thing><first>x</first><z/></thing>"


def test_namespaced_paths_keep_prefix() -> None:
    t = Thing(extra="1")
    assert t.to_xml(pretty=False) == (
        '<thing><ex:extra xmlns:ex="https://example.org/ns" v="1"/></thing>'
    )


def test_child_reading_creates_nothing_and_writing_creates_path() -> None:
    t = Thing()
    assert t.child.value is None
    assert not t.child.exists
    assert t.to_xml(pretty=False) == "<thing/>"
    t.child.value = "v"
    assert t.to_xml(pretty=False) == '<thing><holder><leaf value="v"/></holder></thing>'


def test_child_list_add_and_remove() -> None:
    t = Thing(first="f")
    one = t.add(Leaf(value="1"))
    t.add(Leaf(value="2"))
    assert [leaf.value for leaf in t.leaves] == ["1", "2"]
    t.remove(one)
    assert [leaf.value for leaf in t.leaves] == ["2"]
    with pytest.raises(InvalidInput):
        t.remove(Leaf(value="stranger"))


@pytest.mark.parametrize(
    ("attr", "value", "field"),
    [
        ("kind", "c", "kind"),
        ("count", "3", "count"),
        ("count", -1, "count"),
        ("count", True, "count"),
        ("enabled", "yes", "enabled"),
        ("first", 5, "first"),
        ("first", "bad\x00", "first"),
        ("flag", "yes", "flag"),
        ("names", ["ok", ""], "names"),
        ("state", "x", "state"),
    ],
)
def test_bad_values_name_the_field(attr: str, value: object, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        setattr(Thing(), attr, value)
    assert err.value.field == field


def test_unknown_constructor_property() -> None:
    with pytest.raises(TypeError):
        Thing(nope=1)


def test_wrong_root_element_is_refused() -> None:
    with pytest.raises(InvalidInput):
        Thing.from_xml("<other/>")


def test_parse_refuses_garbage_and_entities() -> None:
    with pytest.raises(InvalidInput):
        parse_xml("<a>")
    evil = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>'
    root = parse_xml(evil)
    assert "root:" not in (root.text or "")


def test_parsed_layout_is_kept_and_new_elements_are_indented() -> None:
    src = "<thing>\n  <first>x</first>\n</thing>"
    t = Thing.from_xml(src)
    assert t.to_xml() == src
    t.count = 2
    assert t.to_xml() == '<thing>\n  <first>x</first>\n  <second count="2"/>\n</thing>'


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1, "KiB", 1024),
        (1, "k", 1024),
        (1, "KB", 1000),
        (2, "G", 2 * 1024**3),
        (2, "GiB", 2 * 1024**3),
        (3, "MB", 3_000_000),
        (5, "bytes", 5),
        (5, "b", 5),
        (1, "TiB", 1024**4),
    ],
)
def test_size_units(value: int, unit: str, expected: int) -> None:
    assert size_to_bytes(value, unit) == expected


def test_parse_size_and_kib() -> None:
    assert parse_size("20G") == 20 * 1024**3
    assert parse_size("512 MiB") == 512 * 1024**2
    assert parse_size("100") == 100
    assert bytes_to_kib(1025) == 2
    for bad in ("", "G", "1.5G", "-1G", "12 parsecs"):
        with pytest.raises(InvalidInput):
            parse_size(bad)


def test_size_property_reads_any_unit() -> None:
    t = Thing.from_xml("<thing><size unit='MiB'>3</size></thing>")
    assert t.size == 3072
    t.size = 4096
    assert t.to_xml(pretty=False) == '<thing><size unit="KiB">4096</size></thing>'
    t2 = Thing.from_xml("<thing><size>7</size></thing>")  # no unit: the property's unit
    assert t2.size == 7


def test_handle_follows_element_removed_and_recreated() -> None:
    t = Thing()
    handle = t.child
    handle.value = "1"
    Thing.child.__set__(t, None)  # the element goes away under the handle
    assert not handle.exists and handle.value is None
    handle.value = "2"  # writes land in the document again, not in a detached element
    assert t.to_xml(pretty=False) == '<thing><holder><leaf value="2"/></holder></thing>'


def test_copy_is_detached() -> None:
    t = Thing(first="a")
    clone = t.copy()
    clone.first = "b"
    assert (t.first, clone.first) == ("a", "b")
