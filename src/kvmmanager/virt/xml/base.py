"""Declarative XML models over an lxml tree (the virtinst idea, written for this project).

An ``XMLObject`` wraps one lxml element. Class attributes declare how Python attributes map
to XML relative to that element; everything the model does not declare is left exactly as
it was, so parsing live XML, editing two fields and writing it back keeps the rest intact.

Path syntax (relative to the object's element), deliberately tiny:
``"name"`` (text of child), ``"@type"`` (attribute), ``"os/type/@arch"``, ``"."`` (own text),
``"listen[@type='address']/@address"`` (a step that only matches, and when created sets,
that attribute) and ``"kvmm:tags/kvmm:tag"`` (prefixes resolved through the class ``NSMAP``).

Declaration order is element order: when a missing element has to be created it is inserted
among its siblings in the order the class declares their paths, so declare in schema order.

Example::

    class Disk(XMLObject):
        TAG = "disk"
        type = XMLProperty("@type", choices=("file", "block"))
        source_file = XMLProperty("source/@file")
        readonly = XMLProperty("readonly", present=True)

    disk = Disk.from_xml("<disk type='file'><target dev='vda'/></disk>")
    disk.source_file = "/var/lib/images/a.qcow2"   # creates <source file=.../>
    disk.readonly = True                          # adds <readonly/>
    disk.source_file = None                       # removes it again (and the empty <source/>)
    disk.to_xml()
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar, overload

from lxml import etree

from kvmmanager.core.errors import InvalidInput

__all__ = [
    "XMLChild",
    "XMLChildList",
    "XMLObject",
    "XMLProperty",
    "XMLSizeProperty",
    "XMLValueList",
    "bytes_to_kib",
    "detach",
    "format_size",
    "parse_size",
    "parse_xml",
    "size_to_bytes",
]

# ---------------------------------------------------------------------------------------------
# Parsing and sizes


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


# libvirt's scaled units: a bare letter or "XiB" is binary, "XB" is decimal, both any case.
_UNIT_FACTORS: dict[str, int] = {"b": 1, "bytes": 1}
for _i, _letter in enumerate("kmgtpe", start=1):
    _UNIT_FACTORS[_letter] = 1024**_i
    _UNIT_FACTORS[f"{_letter}ib"] = 1024**_i
    _UNIT_FACTORS[f"{_letter}b"] = 1000**_i


def size_to_bytes(value: int | str, unit: str | None = "bytes", *, field: str = "size") -> int:
    """Convert ``value`` expressed in a libvirt unit (``KiB``, ``G``, ``MB``, ``bytes``...)."""
    factor = _UNIT_FACTORS.get((unit or "bytes").strip().lower())
    if factor is None:
        raise InvalidInput(f"unknown size unit {unit!r}", field=field)
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} must be an integer, got {value!r}", field=field) from exc
    if number < 0:
        raise InvalidInput(f"{field} must not be negative", field=field)
    return number * factor


def bytes_to_kib(value: int) -> int:
    """Bytes to KiB, rounding up as libvirt does for memory."""
    return math.ceil(value / 1024)


_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str | int, *, default_unit: str = "bytes", field: str = "size") -> int:
    """Parse ``"20G"``, ``"512 MiB"``, ``"1000000KB"`` or a bare number into bytes."""
    if isinstance(text, int):
        return size_to_bytes(text, default_unit, field=field)
    match = _SIZE_TEXT.match(text)
    if not match:
        raise InvalidInput(f"{field} must look like '20G' or '512MiB', got {text!r}", field=field)
    return size_to_bytes(match.group(1), match.group(2) or default_unit, field=field)


def format_size(value: int) -> str:
    """Human-readable binary size, for messages."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Paths

_STEP = re.compile(
    r"^(?:(?P<prefix>[A-Za-z_][\w.-]*):)?(?P<local>[A-Za-z_][\w.-]*)"
    r"(?:\[@(?P<pattr>[A-Za-z_][\w.-]*)='(?P<pval>[^']*)'\])?$"
)


@dataclass(frozen=True)
class _Step:
    tag: str  # Clark notation: "{uri}local" or "local"
    prefix: str | None
    ns: str | None
    pattr: str | None = None
    pval: str | None = None

    def matches(self, el: Any) -> bool:
        return el.tag == self.tag and (self.pattr is None or el.get(self.pattr) == self.pval)


@dataclass(frozen=True)
class _Path:
    steps: tuple[_Step, ...]
    attr: str | None  # None: the value is the last element's text


def _parse_step(text: str, nsmap: dict[str, str], where: str) -> _Step:
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
    return _Step(tag, prefix, ns, match.group("pattr"), match.group("pval"))


def _parse_path(path: str, nsmap: dict[str, str], where: str) -> _Path:
    parts = [p for p in path.split("/") if p and p != "."]
    attr = None
    if parts and parts[-1].startswith("@"):
        attr = parts.pop()[1:]
    return _Path(tuple(_parse_step(p, nsmap, where) for p in parts), attr)


def _find(el: Any, steps: Iterable[_Step]) -> Any:
    for step in steps:
        el = next((c for c in el if step.matches(c)), None)
        if el is None:
            return None
    return el


def _is_element(node: Any) -> bool:
    return isinstance(node.tag, str)


def _indent_unit(parent: Any) -> str | None:
    """The whitespace that precedes children of ``parent``, when the document is indented."""
    text = parent.text
    if text is not None and text.strip() == "" and "\n" in text:
        return text
    return None


def _leading_whitespace(el: Any) -> str | None:
    """The indentation in front of ``el`` when it sits in an indented document."""
    prev = el.getprevious()
    parent = el.getparent()
    ws = prev.tail if prev is not None else (parent.text if parent is not None else None)
    if ws is not None and ws.strip() == "" and "\n" in ws:
        return ws
    return None


def _insert(parent: Any, new: Any, order: list[str] | None) -> None:
    """Insert ``new`` under ``parent`` after its last sibling that sorts before it.

    Whitespace of an indented document is kept consistent so an edited, pretty-printed
    document stays readable; unknown siblings never move.
    """
    children = [c for c in parent if _is_element(c)]
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


def _is_empty(el: Any, step: _Step) -> bool:
    attrs = set(el.attrib) - ({step.pattr} if step.pattr else set())
    has_text = el.text is not None and el.text.strip() != ""
    return not attrs and not has_text and not any(_is_element(c) for c in el)


# ---------------------------------------------------------------------------------------------
# Descriptors


class _Descriptor:
    """Common part of every declaration: a name, a parsed path, the owner class."""

    def __init__(self, path: str | None, *, doc: str | None = None) -> None:
        self.raw_path = path
        self.name = "?"
        self.owner: type[XMLObject] | None = None
        self.path = _Path((), None)
        self.__doc__ = doc

    def __set_name__(self, owner: type[XMLObject], name: str) -> None:
        self.name = name
        self.owner = owner
        self.path = _parse_path(self._path_text(), owner._nsmap(), f"{owner.__name__}.{name}")

    def _path_text(self) -> str:
        return self.raw_path or "."

    def element_steps(self) -> tuple[_Step, ...]:
        """The element steps this declaration may create, for sibling ordering."""
        return self.path.steps


_T = TypeVar("_T")


class XMLProperty(_Descriptor):
    """One scalar value: text or attribute at ``path``; ``None`` means absent.

    ``kind`` is ``str``, ``int`` or ``bool``; booleans are written as ``bools``
    (``("yes", "no")`` by default, or ``("on", "off")``). ``present=True`` makes a boolean
    that is the mere presence of an element (``<readonly/>``). ``choices`` restricts values
    (an enum of the schema). ``readonly`` values come from libvirt and cannot be set.
    """

    def __init__(
        self,
        path: str,
        *,
        kind: type = str,
        choices: Iterable[str] | None = None,
        bools: tuple[str, str] = ("yes", "no"),
        present: bool = False,
        readonly: bool = False,
        minimum: int | None = None,
        check: Callable[[Any, Any], str | None] | None = None,
        doc: str | None = None,
    ) -> None:
        super().__init__(path, doc=doc)
        self.check = check  # (obj, value) -> error message or None, for rules across fields
        self.kind = bool if present else kind
        self.choices = tuple(choices) if choices is not None else None
        self.bools = bools
        self.present = present
        self.readonly = readonly
        self.minimum = minimum

    def __set_name__(self, owner: type[XMLObject], name: str) -> None:
        super().__set_name__(owner, name)
        if self.present and (self.path.attr is not None or not self.path.steps):
            raise ValueError(f"{owner.__name__}.{name}: present=True needs an element path")

    # -- conversion

    def _from_text(self, raw: str | None) -> Any:
        if raw is None:
            return None
        if self.kind is int:
            raw = raw.strip()
            try:
                return int(raw)
            except ValueError:
                try:
                    return int(raw, 0)  # libvirt writes addresses as 0x..
                except ValueError as exc:
                    raise InvalidInput(
                        f"{self.name}: expected an integer in the XML, got {raw!r}",
                        field=self.name,
                    ) from exc
        if self.kind is bool:
            return raw.strip() == self.bools[0]
        return raw

    def _to_text(self, value: Any) -> str:
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidInput(f"{self.name} must be true or false", field=self.name)
            return self.bools[0] if value else self.bools[1]
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(
                    f"{self.name} must be an integer, got {value!r}", field=self.name
                )
            if self.minimum is not None and value < self.minimum:
                raise InvalidInput(f"{self.name} must be >= {self.minimum}", field=self.name)
            return str(value)
        if not isinstance(value, str):
            raise InvalidInput(f"{self.name} must be a string, got {value!r}", field=self.name)
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(self.choices)
            raise InvalidInput(f"{self.name} must be one of: {allowed}", field=self.name)
        if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
            raise InvalidInput(f"{self.name} contains control characters", field=self.name)
        return value

    # -- descriptor protocol

    @overload
    def __get__(self, obj: None, owner: type) -> XMLProperty: ...
    @overload
    def __get__(self, obj: XMLObject, owner: type) -> Any: ...
    def __get__(self, obj: XMLObject | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        if el is None:
            return None if not self.present else False
        target = _find(el, self.path.steps)
        if self.present:
            return target is not None
        if target is None:
            return None
        raw = target.get(self.path.attr) if self.path.attr else target.text
        return self._from_text(raw)

    def __set__(self, obj: XMLObject, value: Any) -> None:
        if self.readonly:
            raise InvalidInput(
                f"{self.name} is reported by libvirt and cannot be set", field=self.name
            )
        if self.present:
            if value is not None and not isinstance(value, bool):
                raise InvalidInput(f"{self.name} must be true or false", field=self.name)
            if value:
                obj._make(self.path.steps)
            else:
                obj._clear(self.path.steps, remove_last=True)
            return
        if value is None:
            el = obj._element()
            if el is None:
                return
            target = _find(el, self.path.steps)
            if target is None:
                return
            if self.path.attr:
                target.attrib.pop(self.path.attr, None)
            else:
                target.text = None
            obj._clear(self.path.steps, remove_last=False)
            return
        text = self._to_text(value)
        if self.check is not None and (problem := self.check(obj, value)):
            raise InvalidInput(f"{self.name}: {problem}", field=self.name)
        target = obj._make(self.path.steps)
        if self.path.attr:
            target.set(self.path.attr, text)
        else:
            target.text = text


class XMLSizeProperty(XMLProperty):
    """A sized element like ``<memory unit='KiB'>N</memory>``, read in any unit.

    The Python value is an int in ``unit`` (``"KiB"`` for memory, ``"bytes"`` for storage);
    writing sets the text and the ``unit`` attribute to that unit.
    """

    def __init__(
        self, path: str, *, unit: str = "KiB", readonly: bool = False, doc: str | None = None
    ) -> None:
        super().__init__(path, kind=int, readonly=readonly, minimum=0, doc=doc)
        self.unit = unit
        self.default_unit = unit

    def __set_name__(self, owner: type[XMLObject], name: str) -> None:
        super().__set_name__(owner, name)
        if self.path.attr is not None:
            raise ValueError(f"{owner.__name__}.{name}: a size lives in element text")

    def __get__(self, obj: XMLObject | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        target = None if el is None else _find(el, self.path.steps)
        if target is None or target.text is None:
            return None
        unit = target.get("unit") or self.default_unit
        size = size_to_bytes(target.text.strip(), unit, field=self.name)
        return math.ceil(size / size_to_bytes(1, self.unit))

    def __set__(self, obj: XMLObject, value: Any) -> None:
        super().__set__(obj, value)
        if value is not None:
            obj._make(self.path.steps).set("unit", self.unit)


class XMLValueList(_Descriptor):
    """A list of scalars from repeated elements, e.g. ``"boot/@dev"`` or ``"tags/tag"``.

    Reading gives a list of str; assigning a list replaces all of them in place.
    """

    def __init__(self, path: str, *, readonly: bool = False, doc: str | None = None) -> None:
        super().__init__(path, doc=doc)
        self.readonly = readonly

    def __set_name__(self, owner: type[XMLObject], name: str) -> None:
        super().__set_name__(owner, name)
        if not self.path.steps:
            raise ValueError(f"{owner.__name__}.{name}: a value list needs an element path")

    def __get__(self, obj: XMLObject | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        container = None if el is None else _find(el, self.path.steps[:-1])
        if container is None:
            return []
        last = self.path.steps[-1]
        values = []
        for child in container:
            if last.matches(child):
                raw = child.get(self.path.attr) if self.path.attr else child.text
                if raw is not None:
                    values.append(raw)
        return values

    def __set__(self, obj: XMLObject, values: Iterable[str] | None) -> None:
        if self.readonly:
            raise InvalidInput(
                f"{self.name} is reported by libvirt and cannot be set", field=self.name
            )
        if isinstance(values, str):
            raise InvalidInput(f"{self.name} must be a list of strings", field=self.name)
        values = list(values or [])
        for value in values:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"{self.name} items must be non-empty strings", field=self.name)
        el = obj._element()
        container = None if el is None else _find(el, self.path.steps[:-1])
        last = self.path.steps[-1]
        if container is not None:
            for child in [c for c in container if last.matches(c)]:
                detach(child)
        if not values:
            if container is not None:
                obj._clear(self.path.steps[:-1], remove_last=False)
            return
        container = obj._make(self.path.steps[:-1])
        order = obj._order_for(self.path.steps[:-1])
        for value in values:
            child = obj._new_element(last, container)
            if self.path.attr:
                child.set(self.path.attr, value)
            else:
                child.text = value
            _insert(container, child, order)


_O = TypeVar("_O", bound="XMLObject")


class XMLChild(_Descriptor):
    """A single nested object (``domain.os``); reading never creates XML, setting does."""

    def __init__(self, cls: type[_O], path: str | None = None, *, doc: str | None = None):
        super().__init__(path, doc=doc)
        self.cls = cls

    def _path_text(self) -> str:
        return self.raw_path or self.cls.TAG

    def __get__(self, obj: XMLObject | None, owner: type) -> Any:
        if obj is None:
            return self
        return self.cls(_parent=obj, _steps=self.path.steps)

    def __set__(self, obj: XMLObject, value: XMLObject | None) -> None:
        el = obj._element()
        current = None if el is None else _find(el, self.path.steps)
        if current is not None:
            detach(current)
        if value is None:
            return
        if not isinstance(value, self.cls):
            raise InvalidInput(f"{self.name} must be a {self.cls.__name__}", field=self.name)
        parent = obj._make(self.path.steps[:-1])
        _insert(parent, value._element(create=True), obj._order_for(self.path.steps[:-1]))
        value._attach(obj, self.path.steps)


class XMLChildList(_Descriptor):
    """Repeated nested objects (``devices.disks``); add and remove them with the parent's
    ``add()`` / ``remove()``."""

    def __init__(self, cls: type[_O], path: str | None = None, *, doc: str | None = None):
        super().__init__(path, doc=doc)
        self.cls = cls

    def _path_text(self) -> str:
        return self.raw_path or self.cls.TAG

    def __get__(self, obj: XMLObject | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        container = None if el is None else _find(el, self.path.steps[:-1])
        if container is None:
            return []
        last = self.path.steps[-1]
        return [self.cls(c, _parent=obj) for c in container if last.matches(c)]

    def __set__(self, obj: XMLObject, value: Any) -> None:
        raise AttributeError(f"{self.name} is a list: use add() and remove()")


# ---------------------------------------------------------------------------------------------
# The base object


class XMLObject:
    """Base of every model: wraps an lxml element (or a not-yet-created place in a parent)."""

    TAG: ClassVar[str] = ""
    NSMAP: ClassVar[dict[str, str]] = {}
    # Filled by __init_subclass__: element path (tuple of tags) -> ordered child tags.
    _ORDER: ClassVar[dict[tuple[str, ...], list[str]]] = {}
    _DESCRIPTORS: ClassVar[list[_Descriptor]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass's own declarations sort before inherited ones (a device's <alias> last).
        descriptors: list[_Descriptor] = []
        seen: set[str] = set()
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                if name in seen:
                    continue  # overridden lower down, possibly by a plain property
                seen.add(name)
                if isinstance(value, _Descriptor):
                    descriptors.append(value)
        cls._DESCRIPTORS = descriptors
        order: dict[tuple[str, ...], list[str]] = {}
        for desc in descriptors:
            steps = desc.element_steps()
            for i, step in enumerate(steps):
                key = tuple(s.tag for s in steps[:i])
                tags = order.setdefault(key, [])
                if step.tag not in tags:
                    tags.append(step.tag)
        cls._ORDER = order

    @classmethod
    def _nsmap(cls) -> dict[str, str]:
        return dict(cls.NSMAP)

    @classmethod
    def _root_step(cls) -> _Step:
        return _parse_step(cls.TAG, cls._nsmap(), cls.__name__)

    def __init__(
        self,
        element: Any = None,
        *,
        _parent: XMLObject | None = None,
        _steps: tuple[_Step, ...] | None = None,
        **props: Any,
    ) -> None:
        """Wrap ``element``, or build a new one; ``props`` set declared properties."""
        if element is None and _parent is None:
            step = self._root_step()
            nsmap = {step.prefix: step.ns} if step.prefix else None
            element = etree.Element(step.tag, nsmap=nsmap)
            self._created = True
        else:
            self._created = False
        if element is not None and element.tag != self._root_step().tag:
            raise InvalidInput(
                f"expected <{self.TAG}>, got <{etree.QName(element).localname}>",
                field=self.TAG,
            )
        self._elem = element
        self._parent = _parent
        self._steps = _steps or ()
        for name, value in props.items():
            if not isinstance(getattr(type(self), name, None), (_Descriptor, property)):
                raise TypeError(f"{type(self).__name__} has no property {name!r}")
            setattr(self, name, value)

    # -- construction and output

    @classmethod
    def from_xml(cls, text: str | bytes) -> Self:
        """Parse XML text whose root is this model's element."""
        return cls(parse_xml(text, what=cls.TAG or cls.__name__))

    def to_xml(self, *, pretty: bool | None = None) -> str:
        """Serialise; objects built from scratch are indented, parsed ones keep their layout."""
        el = self._element()
        if el is None:
            # A place in a parent that holds nothing yet: show it empty, change nothing.
            el = etree.Element(self._root_step().tag, nsmap=dict(self.NSMAP) or None)
        if pretty is None:
            pretty = self._created and el.getparent() is None
        if pretty:
            el = copy.deepcopy(el)
            etree.indent(el, space="  ")
        return etree.tostring(el, encoding="unicode", with_tail=False)

    def copy(self) -> Self:
        """A detached deep copy."""
        el = self._element(create=True)
        clone = type(self)(copy.deepcopy(el))
        clone._created = self._created
        return clone

    @property
    def element(self) -> Any:
        """The underlying lxml element (created on demand)."""
        return self._element(create=True)

    @property
    def exists(self) -> bool:
        """Whether this object's element is present in the document."""
        return self._element() is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, XMLObject):
            return NotImplemented
        mine, theirs = self._element(), other._element()
        return mine is not None and mine is theirs

    def __hash__(self) -> int:
        return id(self._element())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.to_xml(pretty=False)[:80]!r}>"

    # -- children

    def _list_for(self, child: XMLObject) -> XMLChildList:
        for desc in type(self)._DESCRIPTORS:
            if isinstance(desc, XMLChildList) and type(child) is desc.cls:
                return desc
        for desc in type(self)._DESCRIPTORS:
            if isinstance(desc, XMLChildList) and isinstance(child, desc.cls):
                return desc
        raise InvalidInput(
            f"{type(self).__name__} cannot hold a {type(child).__name__}", field=child.TAG
        )

    def add(self, child: _O) -> _O:
        """Insert ``child`` (a new or detached object) into the matching child list."""
        desc = self._list_for(child)
        container = self._make(desc.path.steps[:-1])
        el = child._element(create=True)
        _insert(container, el, self._order_for(desc.path.steps[:-1]))
        child._attach(self, ())
        return child

    def remove(self, child: XMLObject) -> None:
        """Remove ``child``'s element from this object."""
        desc = self._list_for(child)
        el = child._element()
        mine = self._element()
        if el is None or mine is None or not any(a is mine for a in el.iterancestors()):
            raise InvalidInput(f"this {child.TAG} is not part of the document", field=child.TAG)
        detach(el)
        self._clear(desc.path.steps[:-1], remove_last=False)

    # -- element plumbing used by descriptors

    def _attach(self, parent: XMLObject, steps: tuple[_Step, ...]) -> None:
        self._parent = parent
        self._steps = steps
        self._created = False

    def _element(self, create: bool = False) -> Any:
        if self._elem is not None:
            return self._elem
        assert self._parent is not None
        parent_el = self._parent._element(create=create)
        if parent_el is None:
            return None
        el = _find(parent_el, self._steps)
        if el is None and create:
            el = self._parent._make(self._steps)
        if el is not None:
            self._elem = el
        return el

    def _order_for(self, steps: tuple[_Step, ...]) -> list[str] | None:
        return type(self)._ORDER.get(tuple(s.tag for s in steps))

    def _new_element(self, step: _Step, parent: Any) -> Any:
        nsmap = None
        if step.ns and parent.nsmap.get(step.prefix) != step.ns:
            nsmap = {step.prefix: step.ns}
        el = etree.Element(step.tag, nsmap=nsmap)
        if step.pattr is not None:
            el.set(step.pattr, step.pval or "")
        return el

    def _make(self, steps: tuple[_Step, ...]) -> Any:
        """Find or create the element at ``steps`` below this object."""
        el = self._element(create=True)
        for i, step in enumerate(steps):
            nxt = _find(el, (step,))
            if nxt is None:
                nxt = self._new_element(step, el)
                _insert(el, nxt, self._order_for(steps[:i]))
            el = nxt
        return el

    def _clear(self, steps: tuple[_Step, ...], *, remove_last: bool) -> None:
        """Remove elements along ``steps`` that became empty, innermost first."""
        el = self._element()
        if el is None:
            return
        chain = []
        for step in steps:
            el = _find(el, (step,))
            if el is None:
                return
            chain.append((el, step))
        for i, (node, step) in enumerate(reversed(chain)):
            forced = i == 0 and remove_last
            if forced or _is_empty(node, step):
                detach(node)
            else:
                break


def iter_objects(objs: Iterable[_O], **match: Any) -> Iterator[_O]:
    """Yield objects whose attributes equal every ``match`` item."""
    for obj in objs:
        if all(getattr(obj, k) == v for k, v in match.items()):
            yield obj
