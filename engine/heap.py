"""release_freed_heap: give memory freed by short-lived buffers back to the OS (glibc's malloc_trim).

Loading a quantized model makes many per-tensor temporaries (codes, unpacked nibbles) between
the small long-lived tensors it keeps; glibc keeps the freed holes resident, which measured
~4.6 MB per layer here (peak RSS 604 MB vs 456 MB after a trim). Trimming as loading goes keeps
the peak near the final size. A no-op where libc has no malloc_trim.
"""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def _trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_heap() -> None:
    trim = _trim()
    if trim is not None:
        trim(0)
