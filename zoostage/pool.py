"""A process pool that notices when a worker dies.

multiprocessing.Pool replaces a worker killed by a signal (SIGBUS on a full disk, the
OOM killer's SIGKILL) and waits forever for the task it was running. `map_unordered`
runs tasks in worker processes fed from one queue and, while it waits for results,
checks that every worker is alive: a dead one ends the run with a UserError naming how
it died.
"""

import multiprocessing
import os
import queue
import signal

from zoostage.errors import UserError, describe_exit

_DONE = "done"
_POLL_SECONDS = 0.2


# Signals that stop a stage: blocked while workers are forked (see _start).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _serve(func, initializer, initargs, tasks, results):
    # The parent handles interrupts and stops its workers with SIGTERM: a worker just
    # ends, without a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # pending ones end us now
    if initializer is not None:
        initializer(*initargs)
    while True:
        task = tasks.get()
        if task is None:
            results.put((_DONE, None))
            return
        results.put((None, func(task)))


def usable_cores():
    """The cores this process may run on (its affinity: a container's cpuset), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def pool_size(workers, tasks):
    """How many processes serve `tasks` tasks when `workers` are asked for (0/None: all).

    Never more than the tasks (an idle process is only a fork) nor than the cores (more
    processes than cores only share them): `--workers 100000` on one image is one process.
    """
    wanted = int(workers or 0) or usable_cores()
    return max(1, min(wanted, usable_cores(), int(tasks)))


def map_unordered(func, tasks, workers, initializer=None, initargs=(), label="work"):
    """Yield func(task) for every task, in completion order, from up to `workers`
    processes (capped by pool_size at the tasks and the cores).

    `func` and `initializer` must be top-level functions. A worker that dies raises a
    UserError (the other workers are stopped); so does leaving the loop early.
    """
    tasks = list(tasks)
    workers = pool_size(workers, len(tasks))
    inbox, outbox = multiprocessing.Queue(), multiprocessing.Queue()
    for task in tasks:
        inbox.put(task)
    processes = [
        multiprocessing.Process(
            target=_serve, args=(func, initializer, initargs, inbox, outbox), daemon=True
        )
        for _ in range(workers)
    ]
    for _ in processes:
        inbox.put(None)
    _start(processes)
    finished = 0
    try:
        received = 0
        while received < len(tasks):
            try:
                kind, value = outbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                _check_alive(processes, finished, label)
                continue
            if kind == _DONE:
                finished += 1
                continue
            received += 1
            yield value
    finally:
        # Tasks left in the queue must not keep this process from exiting.
        inbox.cancel_join_thread()
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()


def _start(processes):
    """Start the workers with the stop signals blocked.

    A forked worker inherits the stage's Python handlers until _serve replaces them: a
    SIGTERM from the parent's cleanup in that window (an error in the first task) would
    raise in the worker and print its traceback. Blocked, it waits for SIG_DFL.
    """
    if not hasattr(signal, "pthread_sigmask"):
        for process in processes:
            process.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for process in processes:
            process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _check_alive(processes, finished, label):
    dead = [p for p in processes if p.exitcode not in (None, 0)]
    if dead:
        raise UserError(
            "a %s worker process died (%s) before finishing its work: out of memory, or "
            "a full disk under a memory-mapped file? Rerun with --workers 1 to see the "
            "error in the stage itself" % (label, describe_exit(dead[0].exitcode))
        )
    if finished == len(processes):
        raise UserError("%s workers finished without returning every result" % label)
