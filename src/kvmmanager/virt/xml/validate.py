"""Validate XML against libvirt's own RelaxNG schemas with ``virt-xml-validate``.

``virt-xml-validate`` (package libvirt-clients; it runs ``xmllint`` from libxml2-utils) is
a schema checker, not a libvirt client, so calling it breaks no "libvirt only" rule.

Example (typically in tests)::

    from kvmmanager.virt.xml.validate import validate_xml
    validate_xml(domain.to_xml(), "domain")      # raises SchemaValidationError if invalid
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from kvmmanager.core.errors import InvalidInput, Unsupported

# Accepted kind names -> virt-xml-validate schema names.
SCHEMAS = {
    "domain": "domain",
    "network": "network",
    "pool": "storagepool",
    "storagepool": "storagepool",
    "vol": "storagevol",
    "volume": "storagevol",
    "storagevol": "storagevol",
    "capabilities": "capability",
    "domaincaps": "domaincaps",
    "domaincapabilities": "domaincaps",
    "snapshot": "domainsnapshot",
    "domainsnapshot": "domainsnapshot",
    "backup": "domainbackup",
    "domainbackup": "domainbackup",
    "checkpoint": "domaincheckpoint",
    "domaincheckpoint": "domaincheckpoint",
    "nwfilter": "nwfilter",
    "secret": "secret",
    "interface": "interface",
}


class SchemaValidationError(InvalidInput):
    """The XML does not match libvirt's schema; ``details`` holds the validator's output."""


def validator_available() -> bool:
    return shutil.which("virt-xml-validate") is not None and shutil.which("xmllint") is not None


def validate_xml(xml: str, kind: str, *, timeout: float = 60.0) -> None:
    """Raise :class:`SchemaValidationError` unless ``xml`` is valid for ``kind``
    (``domain``, ``network``, ``pool``, ``vol``, ``capabilities``, ``domaincaps``...)."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise InvalidInput(f"unknown schema kind {kind!r}", field="kind")
    if not validator_available():
        raise Unsupported(
            "virt-xml-validate and xmllint are needed (packages libvirt-clients, libxml2-utils)"
        )
    fd, path = tempfile.mkstemp(prefix="kvmm-validate-", suffix=".xml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(xml)
        proc = subprocess.run(
            ["virt-xml-validate", path, schema],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        output = (proc.stderr + proc.stdout).replace(path, f"<{kind}.xml>").strip()
        lines = output.splitlines()
        first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
        raise SchemaValidationError(
            f"{kind} XML does not validate against libvirt's schema: {first}",
            field=kind,
            details=output,
        )
