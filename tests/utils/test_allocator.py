import os
import subprocess
import sys

import pytest

# Allocate and free a 64 MiB tensor 14 times; print the minor page faults of the last 8 (glibc
# takes a few rounds to settle on reusing the freed block, and may still move it now and then).
PROBE = """
import resource, sys, torch
from lit_matching.utils.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
for _ in range(6):
    torch.empty(16 << 20).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    torch.empty(16 << 20).fill_(1.0)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def probe(mode: str, **env: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=os.environ | env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc is Linux's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")  # per allocation
    applied, reused = probe("reuse")
    assert applied
    assert reused <= 2 * pages  # most of the 8 later tensors reuse freed pages
    _, faulted = probe("glibc")
    assert faulted >= 6 * pages  # glibc's default: fresh pages for every tensor
    assert probe("reuse", LIT_MATCHING_MALLOC="default") == (False, pytest.approx(faulted, rel=0.5))
