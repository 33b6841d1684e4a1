"""The descriptors a model class declares: scalar properties, sizes, value lists, one child
object, lists of child objects. See :mod:`kvmmanager.virt.xml.base` for how to use them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol, overload

from kvmmanager.core.errors import InvalidInput
from kvmmanager.virt.xml.sizes import size_to_bytes
from kvmmanager.virt.xml.tree import Path, Step, detach, find, insert, parse_path


class XMLNode(Protocol):
    """What a descriptor needs of the model object it sits on, and of the model class it
    builds children from. ``base.XMLObject`` is the one implementation; naming it here as a
    protocol keeps this module below base.py (base.py imports the descriptors)."""

    TAG: ClassVar[str]

    def __init__(
        self,
        element: Any = None,
        *,
        _parent: Any = None,
        _steps: tuple[Step, ...] | None = None,
    ) -> None: ...
    @classmethod
    def _nsmap(cls) -> dict[str, str]: ...
    def _element(self, create: bool = False) -> Any: ...
    def _make(self, steps: tuple[Step, ...]) -> Any: ...
    def _clear(self, steps: tuple[Step, ...], *, remove_last: bool) -> None: ...
    def _order_for(self, steps: tuple[Step, ...]) -> list[str] | None: ...
    def _new_element(self, step: Step, parent: Any) -> Any: ...
    def _attach(self, parent: Any, steps: tuple[Step, ...]) -> None: ...


class _Descriptor:
    """Common part of every declaration: a name, a parsed path, the owner class."""

    def __init__(self, path: str | None, *, doc: str | None = None) -> None:
        self.raw_path = path
        self.name = "?"
        self.owner: type[XMLNode] | None = None
        self.path = Path((), None)
        self.__doc__ = doc

    def __set_name__(self, owner: type[XMLNode], name: str) -> None:
        self.name = name
        self.owner = owner
        self.path = parse_path(self._path_text(), owner._nsmap(), f"{owner.__name__}.{name}")

    def _path_text(self) -> str:
        return self.raw_path or "."

    def element_steps(self) -> tuple[Step, ...]:
        """The element steps this declaration may create, for sibling ordering."""
        return self.path.steps


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

    def __set_name__(self, owner: type[XMLNode], name: str) -> None:
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
    def __get__(self, obj: XMLNode, owner: type) -> Any: ...
    def __get__(self, obj: XMLNode | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        if el is None:
            return None if not self.present else False
        target = find(el, self.path.steps)
        if self.present:
            return target is not None
        if target is None:
            return None
        raw = target.get(self.path.attr) if self.path.attr else target.text
        return self._from_text(raw)

    def __set__(self, obj: XMLNode, value: Any) -> None:
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
            target = find(el, self.path.steps)
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

    def __set_name__(self, owner: type[XMLNode], name: str) -> None:
        super().__set_name__(owner, name)
        if self.path.attr is not None:
            raise ValueError(f"{owner.__name__}.{name}: a size lives in element text")

    def __get__(self, obj: XMLNode | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        target = None if el is None else find(el, self.path.steps)
        if target is None or target.text is None:
            return None
        unit = target.get("unit") or self.default_unit
        size = size_to_bytes(target.text.strip(), unit, field=self.name)
        return math.ceil(size / size_to_bytes(1, self.unit))

    def __set__(self, obj: XMLNode, value: Any) -> None:
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

    def __set_name__(self, owner: type[XMLNode], name: str) -> None:
        super().__set_name__(owner, name)
        if not self.path.steps:
            raise ValueError(f"{owner.__name__}.{name}: a value list needs an element path")

    def __get__(self, obj: XMLNode | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        container = None if el is None else find(el, self.path.steps[:-1])
        if container is None:
            return []
        last = self.path.steps[-1]
        values = []
        for child in container.iterchildren(last.tag):
            if last.matches(child):
                raw = child.get(self.path.attr) if self.path.attr else child.text
                if raw is not None:
                    values.append(raw)
        return values

    def __set__(self, obj: XMLNode, values: Iterable[str] | None) -> None:
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
        container = None if el is None else find(el, self.path.steps[:-1])
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
            insert(container, child, order)


class XMLChild(_Descriptor):
    """A single nested object (``domain.os``); reading never creates XML, setting does."""

    def __init__(self, cls: type[XMLNode], path: str | None = None, *, doc: str | None = None):
        super().__init__(path, doc=doc)
        self.cls = cls

    def _path_text(self) -> str:
        return self.raw_path or self.cls.TAG

    def __get__(self, obj: XMLNode | None, owner: type) -> Any:
        if obj is None:
            return self
        return self.cls(_parent=obj, _steps=self.path.steps)

    def __set__(self, obj: XMLNode, value: XMLNode | None) -> None:
        if value is not None and not isinstance(value, self.cls):
            raise InvalidInput(f"{self.name} must be a {self.cls.__name__}", field=self.name)
        el = obj._element()
        current = None if el is None else find(el, self.path.steps)
        if current is not None:
            detach(current)
        if value is None:
            # libvirt keeps an empty <metadata/>: drop containers this left empty.
            obj._clear(self.path.steps[:-1], remove_last=False)
            return
        parent = obj._make(self.path.steps[:-1])
        insert(parent, value._element(create=True), obj._order_for(self.path.steps[:-1]))
        value._attach(obj, self.path.steps)


class XMLChildList(_Descriptor):
    """Repeated nested objects (``devices.disks``); add and remove them with the parent's
    ``add()`` / ``remove()``."""

    def __init__(self, cls: type[XMLNode], path: str | None = None, *, doc: str | None = None):
        super().__init__(path, doc=doc)
        self.cls = cls

    def _path_text(self) -> str:
        return self.raw_path or self.cls.TAG

    def __get__(self, obj: XMLNode | None, owner: type) -> Any:
        if obj is None:
            return self
        el = obj._element()
        container = None if el is None else find(el, self.path.steps[:-1])
        if container is None:
            return []
        last = self.path.steps[-1]
        return [
            self.cls(c, _parent=obj) for c in container.iterchildren(last.tag) if last.matches(c)
        ]

    def __set__(self, obj: XMLNode, value: Any) -> None:
        raise AttributeError(f"{self.name} is a list: use add() and remove()")
