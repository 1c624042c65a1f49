"""Each image's loaded memory stays small: QEMU's multiboot loader keeps a copy of everything it loads
(zero-filled .bss included) and writes all of it into guest RAM, so every KiB there costs every VM twice.
Big buffers belong in the .lazy section (unikernels/README.md, Memory), which no segment loads."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bench.unikernel_harness import image_for
from tests.unikernel.lab import built

SERVICES = ("httpd", "echo", "static", "kv", "api")
PT_LOAD = 1
LOADED_MAX = 1024 * 1024  # the image's file is at most 1 MiB too; .bss was 5 MiB before .lazy


def loaded_segments(path: Path) -> list[tuple[int, int]]:
    """(address, memsz) of every PT_LOAD program header of a 32-bit little-endian ELF."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1, f"{path} is not a 32-bit ELF"
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    segments = []
    for i in range(phnum):
        p_type, _offset, vaddr, _paddr, _filesz, memsz = struct.unpack_from("<6I", data, phoff + i * phentsize)
        if p_type == PT_LOAD:
            segments.append((vaddr, memsz))
    return segments


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    built(*SERVICES)
    return {s: image_for(s) for s in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_loaded_memory_is_small(images: dict[str, Path], service: str) -> None:
    segments = loaded_segments(images[service])
    assert segments, "no loadable segment"
    loaded = sum(memsz for _, memsz in segments)
    assert loaded <= LOADED_MAX, f"{service}: {loaded} bytes loaded; move big buffers to .lazy"


def section(path: Path, name: str) -> tuple[int, int] | None:
    """(address, size) of the named section of a 32-bit ELF, or None."""
    data = path.read_bytes()
    shoff, = struct.unpack_from("<I", data, 32)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 46)
    headers = [struct.unpack_from("<10I", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset = headers[shstrndx][4]
    for h in headers:
        start = strtab_offset + h[0]
        if data[start:data.index(b"\0", start)].decode() == name:
            return h[3], h[5]
    return None


def test_lwip_memory_is_in_lazy_past_the_loaded_image(images: dict[str, Path]) -> None:
    """lwIP's 3 MiB heap and its pools are in .lazy, which lies past everything loaded (so the loader's
    copy ends before it) and before the page allocator's memory (which starts at __kernel_end)."""
    for service, path in images.items():
        lazy = section(path, ".lazy")
        assert lazy is not None, f"{service}: no .lazy section"
        address, size = lazy
        assert size >= 3 * 1024 * 1024, f"{service}: .lazy holds {size} bytes, less than lwIP's heap"
        loaded_end = max(vaddr + memsz for vaddr, memsz in loaded_segments(path))
        assert address >= loaded_end, f"{service}: .lazy at {address:#x} overlaps the loaded image ({loaded_end:#x})"
