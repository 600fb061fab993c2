"""Kernel receive stamps (SO_TIMESTAMPNS) on time.perf_counter's clock.

Both ends of a measurement use them: the calibration server for when a request reached its
socket, the client for when each chunk reached its own. A stamp does not move when a busy
process reads the bytes later.
"""

from __future__ import annotations

import socket
import struct
from time import perf_counter_ns, time_ns

SO_TIMESTAMPNS = 35  # Linux; the socket module does not name it
ANC_SPACE = socket.CMSG_SPACE(16)  # recvmsg room for one struct timespec
_timespec = struct.Struct("qq").unpack_from


def realtime_offset() -> tuple[int, float]:
    """(base, offset) for `arrival`: kernel stamps are CLOCK_REALTIME, perf_counter is
    CLOCK_MONOTONIC. Read it again often (per poll), so clock slewing cannot add up; the
    whole second `base` keeps the per-stamp sum in small floats."""
    real, mono = time_ns(), perf_counter_ns()
    base = real // 1_000_000_000
    return base, (base * 1_000_000_000 + mono - real) / 1e9


def arrival(anc: list, base: int, offset: float) -> float | None:
    """The receive stamp in recvmsg's ancillary data, in perf_counter seconds; None without one.
    Only the first message is looked at: these sockets ask for no other kind."""
    if anc and anc[0][1] == SO_TIMESTAMPNS:
        sec, nsec = _timespec(anc[0][2])
        return (sec - base) + nsec * 1e-9 + offset
    return None
