"""When a flow is sampled and what a sample counts: memoryless sampling times (ndt7 / OONI
dd-007), bytes as the kernel counts them on the connection (TCP_INFO), and the bound on the
number of samples a flow keeps. Used by probe.measure.throughput."""

from __future__ import annotations

import random
import socket
import struct

from probe.throttling.rates import Samples

SAMPLE_MEAN_S = 0.100
SAMPLE_MIN_S = 0.010
SAMPLE_MAX_S = 0.300
TARGET_SAMPLES = 60  # about this many samples over a flow's time limit
MAX_SAMPLES = 200  # hard bound on the stored samples of one flow
_TCPI_BYTES_RECEIVED = struct.Struct("=Q")  # u64 at offset 128 of struct tcp_info
_TCPI_OFFSET, _TCPI_LEN = 128, 136


def sample_delay(rng: random.Random, mean: float = SAMPLE_MEAN_S) -> float:
    """One memoryless sampling interval, clipped like ndt7/dd-007 (scaled with `mean`)."""
    scale = mean / SAMPLE_MEAN_S
    return min(SAMPLE_MAX_S * scale, max(SAMPLE_MIN_S * scale, rng.expovariate(1.0 / mean)))


def sample_mean(max_seconds: float) -> float:
    return max(SAMPLE_MEAN_S, max_seconds / TARGET_SAMPLES)


def wire_bytes(sock: socket.socket | None) -> int | None:
    """Bytes received on the TCP connection so far (TCP_INFO), None where the kernel lacks it."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_LEN)
    except OSError:
        return None
    if len(info) < _TCPI_LEN:
        return None
    return _TCPI_BYTES_RECEIVED.unpack_from(info, _TCPI_OFFSET)[0]


def thinned(samples: Samples, limit: int = MAX_SAMPLES) -> Samples:
    """At most `limit` samples, evenly chosen, the first and the last always kept."""
    if len(samples) <= limit:
        return samples
    step = (len(samples) - 1) / (limit - 1)
    return tuple(samples[round(i * step)] for i in range(limit))
