"""Multi-process training on JAX's own runtime (`jax.distributed`): starting it, who is who,
and the decisions every process must take together.

    cnndsl train net.cnn --coordinator 10.0.0.1:7777 --num-processes 4 --process-id 0   # on each host
    srun cnndsl train net.cnn --distributed                                              # SLURM, Open MPI, TPU pods

Every process runs the same program over one global mesh (`engine.Placement`): the global
batch is the one a single-process run takes, each process feeds only its own rows of it
(`jax.make_array_from_process_local_data`), and XLA all-reduces the gradients. Process 0
alone holds the run folder (lock, manifest, checkpoints, history); the others only read it
to resume. Host-side decisions that could differ between processes — a signal, `--max-time`,
the once-a-second divergence check — are agreed on (`World.any`), so every process takes the
same number of steps and no peer is left waiting in a collective.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from ..errors import ArgumentError

# How long start-up waits for every peer (`--join-timeout`; JAX's default), and how soon a
# peer that died mid-run fails the others.
INIT_TIMEOUT_S = 300
HEARTBEAT_TIMEOUT_S = 30
LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "[::1]": "[::1]"}


@dataclass(frozen=True, slots=True)
class Launch:
    """How this process joins a multi-process run. `auto`: JAX detects the cluster (SLURM,
    Open MPI, Kubernetes, Cloud TPU) and `initialize()` takes no arguments."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False
    timeout_s: int = INIT_TIMEOUT_S

    @property
    def requested(self) -> bool:
        return self.auto or self.coordinator is not None or self.num_processes is not None


def check_launch(launch: Launch) -> None:
    """The flags alone, before JAX starts: all three of coordinator/processes/id, or none."""
    if launch.timeout_s < 1:
        raise ArgumentError(f"--join-timeout {launch.timeout_s}: give at least 1 second")
    given = {
        "--coordinator": launch.coordinator,
        "--num-processes": launch.num_processes,
        "--process-id": launch.process_id,
    }
    if launch.auto:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ArgumentError(
                f"`--distributed` detects the cluster itself; it takes no {', '.join(extra)}",
                hints=["drop --distributed to give the coordinator, process count and id by hand"],
            )
        return
    if not launch.requested and launch.process_id is None:
        return
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ArgumentError(
            f"a multi-process run needs --coordinator, --num-processes and --process-id; {', '.join(missing)} missing",
            hints=[
                "e.g. --coordinator 127.0.0.1:7777 --num-processes 2 --process-id 0 (and --process-id 1 for the other)",
                "or `--distributed` where JAX detects the cluster (SLURM, Open MPI, Kubernetes, TPU pods)",
            ],
        )
    host, _, port = (launch.coordinator or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ArgumentError(
            f"--coordinator `{launch.coordinator}`: expected HOST:PORT",
            hints=["the address of process 0, e.g. 10.0.0.1:7777 (127.0.0.1:7777 on one machine)"],
        )
    n, i = launch.num_processes or 0, launch.process_id
    if n < 1:
        raise ArgumentError(f"--num-processes {n}: a run has at least one process")
    if i is None or not 0 <= i < n:
        raise ArgumentError(
            f"--process-id {i}: with --num-processes {n} the ids are 0 to {n - 1}",
            hints=["process 0 is the coordinator and the only one that writes the run folder"],
        )


def initialize(launch: Launch) -> None:
    """Join the run (once, before any JAX computation). On CPU, cross-process collectives go
    through gloo (`jax_cpu_collectives_implementation`)."""
    check_launch(launch)
    if not launch.requested:
        return
    import jax

    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # affects the CPU backend only
    kwargs: dict[str, Any] = {
        "initialization_timeout": launch.timeout_s,
        "heartbeat_timeout_seconds": HEARTBEAT_TIMEOUT_S,
    }
    if not launch.auto:
        kwargs.update(
            coordinator_address=launch.coordinator,
            num_processes=launch.num_processes,
            process_id=launch.process_id,
        )
        host, _, port = (launch.coordinator or "").rpartition(":")
        if host in LOOPBACK:  # one machine: JAX would listen on every interface ([::]:PORT) otherwise
            kwargs["coordinator_bind_address"] = f"{LOOPBACK[host]}:{port}"
    # JAX's preemption notifier takes SIGTERM over from the `StopRequest` the CLI entered;
    # cnndsl agrees on signals itself (`AgreedStop`), so its handlers are put back.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    where = "the cluster's environment" if launch.auto else f"the coordinator at {launch.coordinator}"

    def failure(why: str) -> ArgumentError:
        return ArgumentError(
            f"cannot join the multi-process run through {where}: {why}",
            hints=[
                (
                    f"start every process (same --num-processes, ids 0..N-1) within {launch.timeout_s} s of each"
                    " other (--join-timeout); process 0 listens on the coordinator's port"
                ),
                "with --distributed, run under srun / mpirun / a TPU pod (JAX reads their environment)",
            ],
        )

    def give_up() -> None:
        # JAX aborts the process (SIGABRT, a C++ stack trace) when its own deadline passes:
        # say why first, and exit as a user mistake does. Nothing is written before joining.
        err = failure(f"not every process joined within {launch.timeout_s} s")
        print(err.render(), file=sys.stderr, flush=True)
        os._exit(2)

    # JAX's deadline a little later than ours, so ours is the one that fires.
    kwargs["initialization_timeout"] = launch.timeout_s + 30
    watchdog = threading.Timer(launch.timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise failure(first) from None
    finally:
        watchdog.cancel()
        if threading.current_thread() is threading.main_thread():
            for s, h in handlers.items():
                if h is not None:
                    signal.signal(s, h)


class World:
    """This process's place in the run: `index`, `count`, `writer` (process 0), and `any`,
    the collective OR that keeps host-side decisions the same on every process."""

    def __init__(self) -> None:
        import jax

        self.index = jax.process_index()
        self.count = jax.process_count()
        self.writer = self.index == 0

    @property
    def multi(self) -> bool:
        return self.count > 1

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all processes (one small all-gather); as given with one process."""
        if not self.multi:
            return tuple(bool(f) for f in flags)
        import numpy as np
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather(np.asarray([bool(f) for f in flags], np.int32))
        return tuple(bool(v) for v in np.asarray(got).reshape(self.count, len(flags)).any(0))

    def describe(self) -> str:
        return f"process {self.index} of {self.count}" if self.multi else "1 process"


class AgreedStop:
    """A `StopRequest` whose truth every process agrees on: true once any process got a
    signal (a collective, so it is asked at the same points on every process)."""

    def __init__(self, stop: Any, world: World) -> None:
        self._stop, self._world = stop, world

    def __bool__(self) -> bool:
        return self._world.any(bool(self._stop))[0]

    @property
    def local(self) -> bool:
        """Whether this process got a signal (no collective)."""
        return bool(self._stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stop, name)


__all__ = ["AgreedStop", "Launch", "World", "check_launch", "initialize"]
