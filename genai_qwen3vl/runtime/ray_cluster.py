"""Joining a Ray cluster, shared by ``batch --ray`` (Ray Data) and ``serve --ray-replicas`` (Ray
Serve): Ray imported only here and only when asked for, its start-up quiet, and an address nobody
answers on refused in seconds with one line (Ray itself waits minutes for a cluster's GCS)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket

from ..errors import ClusterError

INSTALL = "pip install 'genai-qwen3vl[ray]' (on this machine and every node)"


def ray_module(flag: str):
    """``ray``, or a ClusterError naming the flag that needs it and the install command."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"{flag} needs Ray: {INSTALL}") from None
    return ray


def connect(address: str | None, flag: str, own_signals: bool = False) -> list[int]:
    """Connects to the cluster at ``address`` (None: the one ``ray start`` runs here, else a new
    local one; "local": a new local one; "auto": the one ``ray start`` runs here); the CPUs of
    each alive node.

    ``own_signals``: the processes of a new local cluster start with SIGTERM blocked (Ray's own
    start blocks SIGINT), so a signal sent to the command's whole process group (a terminal,
    ``timeout``, a service manager) reaches the command alone, which then stops the cluster in
    order; they still die with the command (Ray ties them to it)."""
    ray = ray_module(flag)
    if not ray.is_initialized():
        # Ray's C++ core logs alarming lines at each start (Ray Data keeps actors' constructor
        # arguments alive while a job runs); its own errors reach us as exceptions.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        _reachable(address)
        try:
            with _sigterm_held_for_children() if own_signals else contextlib.nullcontext():
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=True,
                )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = {
                None: "this machine (a new local cluster, or the one `ray start` runs here)",
                "local": "this machine (a new local cluster)",
                "auto": "this machine (the cluster `ray start` runs here)",
            }.get(address, address)
            raise ClusterError(f"cannot connect to Ray at {where}: {' '.join(str(exc).split())[:300]}") from None
    return [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


@contextlib.contextmanager
def _sigterm_held_for_children():
    """SIGTERM blocked in this thread while it starts processes (they inherit the mask); one that
    arrives meanwhile is delivered to this process when the block ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _reachable(address: str | None) -> None:
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            pass
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot connect to Ray at {address}: {getattr(exc, 'strerror', None) or exc}; "
            "start the cluster (`ray start --head`) or give its address"
        ) from None
