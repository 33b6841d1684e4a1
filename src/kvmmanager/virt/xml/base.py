"""Declarative XML models over an lxml tree (the virtinst idea, written for this project).

An ``XMLObject`` wraps one lxml element. Class attributes declare how Python attributes map
to XML relative to that element; everything the model does not declare is left exactly as
it was, so parsing live XML, editing two fields and writing it back keeps the rest intact.

Paths are relative to the object's element: ``"name"``, ``"@type"``, ``"os/type/@arch"``,
``"."``, ``"listen[@type='address']/@address"``, ``"kvmm:tags/kvmm:tag"`` (prefixes from the
class ``NSMAP``); see :mod:`kvmmanager.virt.xml.tree`.

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
from typing import Any, ClassVar, Self, TypeVar

from lxml import etree

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.properties import (
    XMLChild,
    XMLChildList,
    XMLProperty,
    XMLSizeProperty,
    XMLValueList,
    _Descriptor,
)
from kvmmanager.virt.xml.sizes import bytes_to_kib, format_size, parse_size, size_to_bytes
from kvmmanager.virt.xml.tree import Step, detach, find, insert, is_empty, parse_step, parse_xml

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

_O = TypeVar("_O", bound="XMLObject")


class XMLObject:
    """Base of every model: wraps an lxml element (or a not-yet-created place in a parent)."""

    TAG: ClassVar[str] = ""
    NSMAP: ClassVar[dict[str, str]] = {}
    # Filled by __init_subclass__: element path (tuple of tags) -> ordered child tags.
    _ORDER: ClassVar[dict[tuple[str, ...], list[str]]] = {}
    _DESCRIPTORS: ClassVar[list[_Descriptor]] = []
    _ROOT_STEP: ClassVar[Step | None] = None

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
    def _root_step(cls) -> Step:
        # Every wrapped element checks its tag against this: parse it once per class.
        step = cls.__dict__.get("_ROOT_STEP")
        if step is None:
            step = parse_step(cls.TAG, cls._nsmap(), cls.__name__)
            cls._ROOT_STEP = step
        return step

    def __init__(
        self,
        element: Any = None,
        *,
        _parent: XMLObject | None = None,
        _steps: tuple[Step, ...] | None = None,
        **props: Any,
    ) -> None:
        """Wrap ``element``, or build a new one; ``props`` set declared properties."""
        if element is None and _parent is None:
            step = self._root_step()
            # A step with a prefix always has its namespace (parse_step looks it up).
            nsmap = {step.prefix: step.ns} if step.prefix and step.ns is not None else None
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
        insert(container, el, self._order_for(desc.path.steps[:-1]))
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

    def _attach(self, parent: XMLObject, steps: tuple[Step, ...]) -> None:
        self._parent = parent
        self._steps = steps
        self._created = False

    def _element(self, create: bool = False) -> Any:
        if self._elem is not None:
            if not self._steps or self._still_in_parent():
                return self._elem
            self._elem = None  # removed from the document meanwhile: look it up again
        assert self._parent is not None
        parent_el = self._parent._element(create=create)
        if parent_el is None:
            return None
        el = find(parent_el, self._steps)
        if el is None and create:
            el = self._parent._make(self._steps)
        if el is not None:
            self._elem = el
        return el

    def _still_in_parent(self) -> bool:
        node = self._elem
        for _ in self._steps:
            node = node.getparent() if node is not None else None
        return node is not None and self._parent is not None and node is self._parent._element()

    def _order_for(self, steps: tuple[Step, ...]) -> list[str] | None:
        return type(self)._ORDER.get(tuple(s.tag for s in steps))

    def _new_element(self, step: Step, parent: Any) -> Any:
        nsmap = None
        if step.ns and parent.nsmap.get(step.prefix) != step.ns:
            nsmap = {step.prefix: step.ns}
        el = etree.Element(step.tag, nsmap=nsmap)
        if step.pattr is not None:
            el.set(step.pattr, step.pval or "")
        return el

    def _make(self, steps: tuple[Step, ...]) -> Any:
        """Find or create the element at ``steps`` below this object."""
        el = self._element(create=True)
        for i, step in enumerate(steps):
            nxt = find(el, (step,))
            if nxt is None:
                nxt = self._new_element(step, el)
                insert(el, nxt, self._order_for(steps[:i]))
            el = nxt
        return el

    def _clear(self, steps: tuple[Step, ...], *, remove_last: bool) -> None:
        """Remove elements along ``steps`` that became empty, innermost first."""
        el = self._element()
        if el is None:
            return
        chain = []
        for step in steps:
            el = find(el, (step,))
            if el is None:
                return
            chain.append((el, step))
        for i, (node, step) in enumerate(reversed(chain)):
            forced = i == 0 and remove_last
            if forced or is_empty(node, step):
                detach(node)
            else:
                break
