"""Conversion worker processes that survive the death of one of them.

Why not multiprocessing.Pool: a worker killed by the system (the OOM killer, a decoder that
crashes on one file) takes its task with it, and the pool waits for that answer for ever (the
conversion hung, leaving a 0-byte temporary shard). Why not concurrent.futures.ProcessPoolExecutor:
it notices the death but fails every pending task with BrokenProcessPool, without saying which
file was being read.

Here each worker has its own pipe. The parent sends files one at a time, at most IN_FLIGHT per
worker (one in hand, one queued, so a worker never waits for the parent between files), and each
worker answers its files in the order it got them. So the file a worker holds is always the
first it was sent and has not answered. When a worker's process ends (its sentinel becomes
ready), that file becomes a SkippedFile ("worker died (signal 9)"), the files queued behind it go
back to the front of the queue, and a new worker takes the dead one's place. A file that kills
every worker that reads it costs one worker and one skipped file, never the run.

Results come back in the order of the task list; at most `window` files are in flight or waiting
to be handed over, which bounds memory whatever the dataset size.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections import deque
from typing import Callable, Iterator

from dfd.convert import worker
from dfd.preprocess.records import SkippedFile
from dfd.preprocess.video_reader import MAX_FRAME_PIXELS

IN_FLIGHT = 2


def death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"worker died (signal {-exitcode}) while reading this file (out of memory or a crashing decoder?)"
    return f"worker died (exit code {exitcode}) while reading this file"


class _Worker:
    def __init__(self, context, spec: dict, max_frame_pixels: int):
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=worker.serve, args=(child_end, spec, max_frame_pixels), daemon=True)
        self.process.start()
        child_end.close()
        self.held: deque = deque()   # (position, path) sent and not answered, in sending order

    def send(self, task) -> None:
        self.held.append(task)
        try:
            self.connection.send(task)
        except OSError:
            pass   # the worker is gone: its sentinel reports it, and the task is handed on then

    def receive(self, results: dict) -> None:
        """Takes every answer waiting in the pipe."""
        try:
            while self.held and self.connection.poll():
                position, result = self.connection.recv()
                self.held.popleft()
                results[position] = result
        except (EOFError, OSError):
            pass

    def stop(self) -> None:
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()


def read_in_order(tasks: list[tuple[int, str]], spec: dict, workers: int, window: int,
                  on_send: Callable[[int, int, str], None] | None = None,
                  max_frame_pixels: int = MAX_FRAME_PIXELS) -> Iterator[tuple[int, object]]:
    """Yields (position, RecordContent | SkippedFile) for `tasks` [(position, path)], in their order.

    on_send(pid, position, path), when given, is called as each file is sent to a worker
    (tests use it to kill a worker for real).
    """
    if not tasks:
        return
    # forkserver, not fork: forking a process that has TensorFlow's threads running
    # can deadlock. Workers preload only the TF-free reading modules.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dfd.convert.worker"])
    order = [position for position, _ in tasks]
    queue: deque = deque(tasks)
    results: dict[int, object] = {}
    pool = [_Worker(context, spec, max_frame_pixels) for _ in range(max(1, min(workers, len(tasks))))]
    next_index = 0
    try:
        while next_index < len(order):
            while next_index < len(order) and order[next_index] in results:
                yield order[next_index], results.pop(order[next_index])
                next_index += 1
            if next_index == len(order):
                break
            for member in pool:
                while queue and len(member.held) < IN_FLIGHT:
                    busy = len(results) + sum(len(m.held) for m in pool)
                    # The file the caller waits for always goes out, so a full window never deadlocks.
                    if busy >= window and queue[0][0] != order[next_index]:
                        break
                    task = queue.popleft()
                    member.send(task)
                    if on_send is not None:
                        on_send(member.process.pid, *task)
            ready = multiprocessing.connection.wait([m.connection for m in pool] + [m.process.sentinel for m in pool])
            for index, member in enumerate(pool):
                if member.connection in ready:
                    member.receive(results)
                if member.process.sentinel in ready or not member.process.is_alive():
                    member.process.join()
                    member.receive(results)   # answers sent before it died still count
                    if member.held:
                        position, path = member.held.popleft()
                        results[position] = SkippedFile(path, death_reason(member.process.exitcode))
                        queue.extendleft(reversed(member.held))
                    member.connection.close()
                    pool[index] = _Worker(context, spec, max_frame_pixels)
    finally:
        for member in pool:
            member.stop()
