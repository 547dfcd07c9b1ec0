"""How a process runs its tensors on a CPU: torch's threads and what the C allocator does with freed memory.

glibc's ``malloc`` gives memory back to the operating system as soon as it can: a freed block above its
mmap threshold (which it raises to at most 32 MiB) is unmapped, and free space at the top of the heap
beyond its trim threshold is released.  A training step or an evaluation batch frees its activations
and allocates the same sizes again moments later, so every step touched fresh pages, each one a page
fault that the kernel serves with a zeroed page.  On a 2-core CPU that was about 40 ms of a 0.6 s
U-Net training step (batch 16), and 20 of the 151 CPU seconds of a short mnist5k U-Net run, most of
them in its evaluation (``docs/performance.md``).  :func:`retain_freed_memory` keeps freed memory in
the heap for the next allocation instead: a process then holds on to its peak heap until it exits,
which a training or evaluation process reaches every step anyway (that run: 2% more peak memory, 1.4
CPU seconds in the kernel).  Results do not change: only where memory comes from.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import torch

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks from here up are mapped and unmapped each time: glibc's largest threshold on 64-bit, where its
# own adjustment would end.  Above it glibc's behaviour stays: serving them from the heap as well
# (M_MMAP_MAX = 0) grew a process's heap to several times a repeatedly allocated block's size.
_MMAP_FROM_BYTES = 32 * 2**20
# Free heap top kept before trimming: the largest value mallopt's int takes, 2 GiB.
_KEEP_BYTES = 2**31 - 1
# A user's own settings of glibc's allocator, which win over ours.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "GLIBC_TUNABLES")


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed blocks below 32 MiB for reuse (heap memory, trimmed above 2 GiB free).

    Process-wide and for the rest of the process.  Does nothing, and returns ``False``, where the C
    library is not glibc or where the environment sets glibc's allocator itself (``MALLOC_*_`` or
    ``GLIBC_TUNABLES``); returns ``True`` once the settings are in place.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both: setting either one stops glibc's own adjustment of the other.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def use_cpu_settings(threads: int | None, retain_memory: bool) -> None:
    """A run's CPU settings: ``threads`` torch threads (``None``: torch's own choice) and, if ``retain_memory``,
    :func:`retain_freed_memory`.  Call it only for a process whose tensors live on the CPU."""
    if threads:
        torch.set_num_threads(int(threads))
    if retain_memory:
        retain_freed_memory()
