"""A CPU process keeps freed memory for reuse: no page faults for memory it freed and allocates again."""

import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="the setting is glibc's")

# A step's pattern: sixteen 1 MiB tensors allocated and written, then freed last first.  The probe
# first holds glibc's mmap threshold at its initial 128 KiB, so that each round maps its blocks afresh
# and faults in every page whatever the process allocated before (glibc's own adjustment of the
# threshold depends on that history); then it calls retain_freed_memory, lets the heap settle for
# four rounds and counts again.  Prints: applied, faults of four rounds before, of four rounds after.
PROBE = """
import ctypes, resource, torch
from bsi.cpu import retain_freed_memory

def faults(rounds):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        blocks = [torch.empty(2**18).fill_(1.0) for _ in range(16)]
        while blocks:
            blocks.pop()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
returned = faults(4)
applied = retain_freed_memory()
faults(4)
print(applied, returned, faults(4))
"""
PAGES = 4 * 16 * 2**20 // 4096  # the pages of four rounds


def probe(**env: str) -> tuple[str, int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, check=True, capture_output=True,
                         text=True).stdout.split()
    return out[-3], int(out[-2]), int(out[-1])


@glibc
def test_freed_memory_is_reused_without_page_faults():
    applied, returned, kept = probe()
    assert applied == "True"
    assert returned > PAGES * 0.9  # mapped afresh: every page faults in
    assert kept < PAGES / 100


@glibc
def test_the_users_own_allocator_settings_are_left_alone():
    applied, returned, kept = probe(MALLOC_TOP_PAD_="0")
    assert applied == "False"
    assert kept > PAGES * 0.9


def test_use_cpu_settings_applies_what_it_is_given(monkeypatch):
    import torch

    import bsi.cpu

    calls = []
    monkeypatch.setattr(bsi.cpu, "retain_freed_memory", lambda: calls.append(1) or True)
    before = torch.get_num_threads()
    try:
        bsi.cpu.use_cpu_settings(2, retain_memory=False)
        assert torch.get_num_threads() == 2 and not calls
        bsi.cpu.use_cpu_settings(None, retain_memory=True)
        assert torch.get_num_threads() == 2 and calls == [1]  # None leaves torch's threads alone
    finally:
        torch.set_num_threads(before)
