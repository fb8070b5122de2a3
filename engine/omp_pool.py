"""release_omp_pool: free the calling thread's OpenMP worker pool before another thread takes over.

libgomp keeps one worker pool per thread that ever ran a parallel region. Once two pools exist
and their threads outnumber the cores, it throttles spin-waiting for all of them, and every
torch op on the engine thread then pays a futex wake-up (measured here: 2 cores, bf16 decode
40 -> 28 tok/s; a 4.5 us softmax took 47 us). The engine thread must be the only pool: the
thread that loaded the model frees its own before handing the model over.
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_OMP_PAUSE_SOFT = 1


@cache
def _libgomp():
    for path in sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*")):
        try:
            lib = ctypes.CDLL(str(path))
            return lib if hasattr(lib, "omp_pause_resource_all") else None
        except OSError:
            continue
    return None


def release_omp_pool() -> bool:
    """Release OpenMP threads not in use; True if libgomp did. A no-op without torch's libgomp."""
    lib = _libgomp()
    if lib is None:
        return False
    released = lib.omp_pause_resource_all(_OMP_PAUSE_SOFT) == 0
    log.debug("released the OpenMP pool of the loading thread: %s", released)
    return released
