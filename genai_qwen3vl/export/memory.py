"""Keeping the export's resident memory down: the memory of memory-mapped checkpoint files is handed
back to the kernel while og's builder runs."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from pathlib import Path
from typing import Iterator

MADV_PAGEOUT = 21


@contextlib.contextmanager
def reclaiming_mapped_memory(paths, interval: float = 0.25) -> Iterator[None]:
    """While the block runs, keep asking the kernel to reclaim this process's resident pages of
    memory maps of ``paths`` (Linux ``madvise(MADV_PAGEOUT)``, kernel 5.4+; elsewhere a no-op).

    og's builder loads the checkpoint memory-mapped and touches every weight once while it
    writes the fp32 graph: the pages stay resident and the export's RSS grows by the size of the
    weights, although the kernel could drop them at any time. MADV_PAGEOUT only reclaims: clean
    file pages are dropped (a later access reads them again), modified ones are kept or swapped,
    never lost. It keeps the peak RSS near the memory the export really holds."""

    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    targets = {str(Path(p).resolve()) for p in paths}
    stop = threading.Event()

    def release() -> None:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in targets:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    libc.madvise(start, end - start, MADV_PAGEOUT)

    def loop() -> None:
        while not stop.wait(interval):
            release()

    thread = threading.Thread(target=loop, name="reclaim-checkpoint-memory", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
