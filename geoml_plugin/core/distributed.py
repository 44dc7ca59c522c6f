"""Jobs on several processes or machines, launched by ``torchrun`` (torch.distributed).

``torchrun --nproc-per-node N script.py`` starts N copies of a script with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set. :func:`session` turns that into a :class:`Session`: the process group (NCCL when the
job runs on CUDA, each rank on its ``LOCAL_RANK`` GPU; gloo on the CPU) and the launcher's key-value store.
Without torchrun (or with one process) :func:`session` gives None and a job runs exactly as in one process.

Failures. A job that fails on one rank must stop every rank, with that rank's message, and leave no file:

* the failing rank publishes its message in the store, then closes its process group (a rank blocked in a
  gloo collective with it gets an error at once) and waits a few seconds until every rank has stopped, so
  the launcher does not kill the others before they have removed their temporary files;
* every other rank sees the failure at its next progress report (:meth:`Session.feedback` checks the
  store) or when its collective fails, and raises :class:`PeerFailed` with the message;
* phase boundaries (:meth:`Session.exchange`) go through the store, not a collective: a rank waiting
  there sees a failure elsewhere even on NCCL, whose collectives wait for their timeout instead.

SIGTERM (the launcher stopping the workers) is raised as :class:`LauncherStopped` (a
:class:`~.errors.JobCancelled`), so that the job's clean-up runs; torchrun sends it to the other ranks when
one has failed, so a rank stopped by it reports that rank's failure when there is one; Ctrl-C reaches every
worker as KeyboardInterrupt and cleans up the same way.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from .errors import GeoMLError, InputError, JobCancelled
from .progress import Feedback, ensure_feedback

STOP_WAIT_S = 10.0  # a failing rank waits at most this long for the others to stop and clean up
POLL_S = 0.02
# A rank whose collective breaks (gloo's "Connection closed by peer") usually lost a peer that failed; the peer's
# message can land in the store a moment after the connection drops, so a rank looks this long for it before
# reporting the failure as its own.
PEER_GRACE_S = 2.0
EXCHANGE_TIMEOUT_S = float(os.environ.get("GEOML_DIST_TIMEOUT", 1800))  # a phase waiting for the slowest rank

_jobs = 0  # sessions opened by this process: every rank opens the same sequence, so keys agree


class PeerFailed(GeoMLError):
    """Another rank of a distributed job failed; this rank stopped with its message."""


class LauncherStopped(JobCancelled):
    """The launcher sent SIGTERM. torchrun does so to the other ranks when one has failed: then that rank's
    message, not this signal, is the cause (:meth:`Session.fail` looks for it)."""

    def __init__(self):
        super().__init__("Stopped by the launcher (SIGTERM); no output was written.")


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun tells each worker."""

    rank: int
    world_size: int
    local_rank: int


def launch_env() -> Optional[LaunchEnv]:
    """The torchrun environment of this process, or None when it was not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return LaunchEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                         int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    except ValueError as exc:
        raise InputError(f"Bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}.") from exc


def is_distributed() -> bool:
    """Whether this process is one of several started by torchrun."""
    env = launch_env()
    return env is not None and env.world_size > 1


def require_one_process(job: str) -> None:
    """Refuse a job that runs in one process (``job``: what it is called in the message) when torchrun has
    started several: every copy would write the same files at once."""
    env = launch_env()
    if env is not None and env.world_size > 1:
        raise InputError(f"{job} runs in one process; this one is one of {env.world_size} started by torchrun.",
                         "Start it without torchrun (or with --nproc-per-node 1); it takes seconds.")


class Session:
    """One job's view of the distributed run: rank, device, the store, and the collectives it needs."""

    def __init__(self, env: LaunchEnv, device, store, owns_group: bool):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size, self.local_rank = env.rank, env.world_size, env.local_rank
        self.device = device
        self.store = store
        self.owns_group = owns_group
        self.failed_here = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- failures ------------------------------------------------------------
    def peer_failure(self) -> Optional[str]:
        """The message of the first rank that failed, or None."""
        if int(self.store.add("failures", 0)) == 0:
            return None
        for r in range(self.world_size):
            if r != self.rank and self.store.check([f"failed/{r}"]):
                return self.store.get(f"failed/{r}").decode("utf-8", "replace")
        return None

    def check_peers(self) -> None:
        """Raise :class:`PeerFailed` when another rank has failed."""
        msg = self.peer_failure()
        if msg is not None:
            raise PeerFailed(msg)

    def fail(self, exc: BaseException) -> BaseException:
        """Stop this rank after ``exc``: publish it (unless it is a peer's failure), close the process group
        and wait until every rank has stopped. Returns the exception to raise. When the store is gone (the
        launcher is shutting down, e.g. after Ctrl-C) ``exc`` is returned as it is."""
        try:
            return self._fail(exc)
        except Exception:  # noqa: BLE001 - the store's own error says less than the job's
            self._close_group()
            return exc

    def _fail(self, exc: BaseException) -> BaseException:
        if not isinstance(exc, PeerFailed):
            own = isinstance(exc, GeoMLError) and not isinstance(exc, LauncherStopped)
            peer = None if own else self._peer_failure_soon()
            if peer is not None:  # e.g. gloo's "Connection closed by peer": the peer's own message is the cause
                exc = PeerFailed(peer)
            else:
                self.failed_here = True
                self.store.set(f"failed/{self.rank}", f"Rank {self.rank} of {self.world_size} failed: "
                               f"{_describe(exc)}")
                self.store.add("failures", 1)
        self._close_group()
        self.store.add("stopped", 1)
        end = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < end and int(self.store.add("stopped", 0)) < self.world_size:
            time.sleep(POLL_S)
        return exc

    def _peer_failure_soon(self) -> Optional[str]:
        """:meth:`peer_failure`, waiting up to ``PEER_GRACE_S`` for a message that may still be on its way."""
        end = time.monotonic() + PEER_GRACE_S
        while True:
            msg = self.peer_failure()
            if msg is not None or time.monotonic() >= end:
                return msg
            time.sleep(POLL_S)

    def _close_group(self) -> None:
        if self.owns_group and self.dist.is_initialized():
            try:
                self.dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - already broken by the failure being reported
                pass

    # -- store phases (no collective: work on NCCL and see failures) ----------
    def exchange(self, name: str, value: Any = None) -> list:
        """Every rank's JSON-able ``value`` for the phase ``name``, in rank order, once all have arrived;
        :class:`PeerFailed` as soon as a rank has failed instead."""
        self.store.set(f"x/{name}/{self.rank}", json.dumps(value))
        keys = [f"x/{name}/{r}" for r in range(self.world_size)]
        end = time.monotonic() + EXCHANGE_TIMEOUT_S
        while not self.store.check(keys):
            self.check_peers()
            if time.monotonic() > end:
                raise GeoMLError(f"Distributed job: a rank did not reach '{name}' within {EXCHANGE_TIMEOUT_S:.0f} s.",
                                 "Set GEOML_DIST_TIMEOUT (seconds) for longer phases.")
            time.sleep(POLL_S)
        return [json.loads(self.store.get(k)) for k in keys]

    def barrier(self, name: str) -> None:
        self.exchange(name)

    def broadcast(self, name: str, value: Any = None) -> Any:
        """Rank 0's ``value`` on every rank."""
        return self.exchange(name, value if self.is_main else None)[0]

    # -- collectives (training) ------------------------------------------------
    def all_reduce_sum(self, values):
        """Element-wise sum over the ranks of a list/array of numbers (float64), as a numpy array."""
        import numpy as np
        import torch

        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if self.device.type == "cuda":
            t = t.to(self.device)
        self.dist.all_reduce(t)
        return t.cpu().numpy()

    def average_gradients(self, params, weight: float = 1.0) -> None:
        """Replace each parameter's gradient by the sum over the ranks of ``weight`` × that rank's gradient
        (``weight`` = this rank's share of the global batch; 1 / world size for equal shares): what
        DistributedDataParallel does in backward, for jobs whose step is not one module call (meta-learning's
        episodes, a GAN's two networks). One all-reduce over the gradients flattened into one buffer; a
        parameter without a gradient on this rank counts as zero."""
        import torch

        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        flat = flat * weight
        self.dist.all_reduce(flat)
        i = 0
        for p in params:
            n = p.numel()
            g = flat[i:i + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            i += n

    def broadcast_parameters(self, module) -> None:
        """Rank 0's parameters and buffers on every rank (every rank then starts from the same network)."""
        import torch

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                self.dist.broadcast(t.data, 0)

    def share(self, total: int) -> tuple[int, int]:
        """(first, count): this rank's part of ``total`` items split as evenly as possible, in rank order."""
        base, extra = divmod(int(total), self.world_size)
        first = self.rank * base + min(self.rank, extra)
        return first, base + (1 if self.rank < extra else 0)

    # -- feedback ------------------------------------------------------------
    def feedback(self, feedback: Optional[Feedback]) -> Feedback:
        """``feedback`` for this rank: rank 0 reports and logs, the others are silent; on every rank a
        progress report raises :class:`PeerFailed` once another rank has failed (or JobCancelled on cancel)."""
        base = ensure_feedback(feedback)
        child = base.sub(0.0, 1.0)
        if not self.is_main:
            child._on_progress, child._on_log = None, None

        def cancelled() -> bool:
            self.check_peers()
            return base.cancelled()

        child._is_cancelled = cancelled
        return child


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GeoMLError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)."
    return f"{type(exc).__name__}: {exc}"


def _init_group(env: LaunchEnv, device_name: str):
    """(device, owns_group): this rank's device, and the process group, created unless the caller did."""
    import torch
    import torch.distributed as dist

    from .device import resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if env.local_rank >= n:
            raise InputError(f"LOCAL_RANK {env.local_rank} but this machine has {n} GPU(s).",
                             "Start at most one process per GPU (torchrun --nproc-per-node).")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device, _owned
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    global _groups
    _groups += 1  # a group made again after a failed job must not meet the keys of the last one
    store = dist.PrefixStore(f"group-{_groups}/", _attempt_store(env))
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size, **kwargs)
    _own_group()
    return device, True


_base_store = None
_groups = 0


def _attempt_store(env: LaunchEnv):
    """The launcher's store, under a prefix of this attempt: after ``torchrun --max-restarts`` restarts the
    workers, the process group must not find the addresses the workers of the last attempt left there."""
    from datetime import timedelta

    import torch.distributed as dist

    global _base_store
    if _base_store is None:
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"  # torchrun hosts it
        _base_store = dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 29500)),
                                    env.world_size, is_master=not agent and env.rank == 0,
                                    timeout=timedelta(seconds=EXCHANGE_TIMEOUT_S), wait_for_workers=False)
    return dist.PrefixStore(f"geoml/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", _base_store)


_owned = False


def _own_group() -> None:
    """The group made here lives as long as the process (jobs run one after another reuse it: creating a
    group again after destroying one races with ranks still leaving the last); destroyed at exit, or when a
    job fails (to free the ranks blocked in a collective with this one)."""
    import atexit

    global _owned
    if not _owned:
        _owned = True
        atexit.register(_destroy_at_exit)


def _destroy_at_exit() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _store(env: LaunchEnv):
    """The launcher's key-value store, under a prefix of its own for this job (and attempt)."""
    import torch.distributed as dist

    global _jobs
    _jobs += 1
    return dist.PrefixStore(f"job-{_jobs}/", _attempt_store(env))


@contextmanager
def _sigterm_as_cancel():
    """SIGTERM raises JobCancelled (once) in the main thread, so clean-up code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise LauncherStopped()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def session(device_name: str = "auto") -> Iterator[Optional[Session]]:
    """A :class:`Session` under torchrun with two or more processes, else None (one process, as always).

    The process group is created by the first session (unless the caller made one) and kept for the next
    jobs of the process. On an exception inside, every rank stops (see the module docstring) and the exception (or, on the
    other ranks, :class:`PeerFailed` with the failing rank's message) is raised."""
    env = launch_env()
    if env is None or env.world_size < 2:
        yield None
        return
    device, owns = _init_group(env, device_name)
    sess = Session(env, device, _store(env), owns)
    with _sigterm_as_cancel():
        try:
            yield sess
        except BaseException as exc:
            stopped = sess.fail(exc)
            if stopped is exc:
                raise
            raise stopped from exc
