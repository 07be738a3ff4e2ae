"""glibc ``malloc`` settings for CPU training: reuse freed memory instead of faulting it in again.

glibc serves every allocation above its mmap threshold (32 MiB at most on 64-bit Linux) with
fresh pages from the kernel and hands them back on ``free``. A training step's large CPU
temporaries (the ``(B, M)`` in-batch logits and their gradients: 32 MiB at ``B = 2048`` with one
sampled negative; the dense gradient of a 1M x 64 embedding table: 256 MiB) are then
page-faulted in again on every step. On Gowalla that doubled the step time (232 against 110
ms per step on one core, 49,000 page faults a step, half the time in the kernel). Turning
glibc's mmap off for large blocks and raising its trim threshold keeps freed memory in the
process for the next step, at the price of a higher resident set (the peak stays allocated).

:class:`~lit_matching.modes.base.MatchingModule` applies it when fitting on CPU (the device is
known only then), so a fit from Python and one from ``lit-matching`` both get it; set the
environment variable ``LIT_MATCHING_MALLOC=default`` to keep glibc's own settings.
"""

from __future__ import annotations

import ctypes
import os
import sys

from pytorch_lightning.utilities import rank_zero_info

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free memory at the top of the heap

_applied = False


def reuse_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring).

    Process-wide and idempotent; does nothing outside Linux with glibc, or when
    ``LIT_MATCHING_MALLOC=default``.

    Returns:
        Whether the settings are in effect.

    Example:
        >>> import sys
        >>> reuse_freed_memory() or not sys.platform.startswith("linux")
        True
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("LIT_MATCHING_MALLOC", "").lower() == "default":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False  # not glibc (e.g. musl): other knobs, other defaults
    _applied = (
        libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    )
    if _applied:
        rank_zero_info(
            "lit_matching: glibc malloc now keeps freed memory for reuse (large CPU tensors are "
            "no longer page-faulted in every step); LIT_MATCHING_MALLOC=default keeps glibc's "
            "settings"
        )
    return _applied
