"""Just enough ELF64 reading for the guest builder: DT_NEEDED of binaries and the
`depends=` field of kernel modules (Debian's kernel package ships no modules.dep;
depmod runs in its postinst, which `dpkg-deb -x` never runs)."""

from __future__ import annotations

import struct
from pathlib import Path

_SHT_DYNAMIC = 6
_DT_NEEDED = 1


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _sections(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, type, offset, size, link) of every section of an ELF64 little-endian file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for i in range(shnum):
        name, typ, _flags, _addr, off, size, link = struct.unpack_from(
            "<IIQQQQI", data, shoff + i * shentsize
        )
        raw.append((name, typ, off, size, link))
    names_off = raw[shstrndx][2]

    def cstr(at: int) -> str:
        return data[at : data.index(b"\0", at)].decode()

    return [(cstr(names_off + n), t, o, s, lk) for n, t, o, s, lk in raw]


def needed(path: Path) -> list[str]:
    """The shared libraries a binary or library links against (its DT_NEEDED)."""
    data = path.read_bytes()
    sections = _sections(data)
    result = []
    for _name, typ, off, size, link in sections:
        if typ != _SHT_DYNAMIC:
            continue
        strtab = sections[link][2]
        for i in range(0, size, 16):
            tag, val = struct.unpack_from("<qQ", data, off + i)
            if tag == _DT_NEEDED:
                end = data.index(b"\0", strtab + val)
                result.append(data[strtab + val : end].decode())
    return result


def modinfo(path: Path) -> dict[str, str]:
    """The key=value pairs of a kernel module's .modinfo section (last value wins)."""
    data = path.read_bytes()
    for name, _typ, off, size, _link in _sections(data):
        if name == ".modinfo":
            pairs = (e.split(b"=", 1) for e in data[off : off + size].split(b"\0") if b"=" in e)
            return {k.decode(): v.decode(errors="replace") for k, v in pairs}
    return {}
