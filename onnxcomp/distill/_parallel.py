"""Scale-out of shard labelling: local processes or Ray actors.

The pending shards are split into ``workers`` contiguous blocks; each worker
(process or Ray actor) opens one ONNX Runtime session and computes its block in
order, so it reads the data once from its first shard on. Workers write their
shard files themselves (atomic per file); only the calling process writes the
manifest, after each shard it hears of. Batches never cross shard boundaries, so
the store is identical to a single-worker run.

For Ray the store folder must be on a file system every node can write (a local
Ray instance or a shared mount), and the data must be picklable (file-backed
sources are; lambdas as transforms are not).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue as _queue
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from onnxcomp.data import Dataset
from onnxcomp.distill._store import ShardResult
from onnxcomp.errors import InvalidInputError, OnnxcompError

__all__ = ["run_processes", "run_ray", "split_blocks"]

logger = logging.getLogger(__name__)

Task = tuple[int, int, int]  # shard index, first sample, sample count


def split_blocks(tasks: Sequence[Task], n: int) -> list[list[Task]]:
    """``tasks`` cut into at most ``n`` contiguous, nearly equal blocks."""
    n = max(1, min(n, len(tasks)))
    size, extra = divmod(len(tasks), n)
    blocks, lo = [], 0
    for i in range(n):
        hi = lo + size + (1 if i < extra else 0)
        blocks.append(list(tasks[lo:hi]))
        lo = hi
    return [b for b in blocks if b]


def _check_picklable(dataset: Dataset) -> None:
    try:
        pickle.dumps(dataset)
    except Exception as e:
        raise InvalidInputError(
            f"{dataset.description}: --workers > 1 needs data that can be sent to other "
            f"processes (a file or folder, or a picklable iterable and transform): {e}"
        ) from e


def _worker_main(
    plan: Any, dataset: Dataset, store: str, tasks: list[Task], threads: int | None, results: Any
) -> None:
    from onnxcomp.distill._label import ShardWorker

    try:
        worker = ShardWorker(plan, dataset, store, threads=threads)
        for index, start, count in tasks:
            results.put(("done", worker.run_shard(index, start, count)))
        results.put(("exit", None))
    except BaseException as e:  # reported to the parent, which raises it
        try:
            pickle.dumps(e)
            results.put(("error", e))
        except Exception:
            results.put(("error", OnnxcompError(f"{type(e).__name__}: {e}")))


def run_processes(
    plan: Any,
    dataset: Dataset,
    store: Path,
    tasks: Sequence[Task],
    workers: int,
    threads: int | None,
    finished: Callable[[ShardResult], None],
) -> None:
    """Compute ``tasks`` in ``workers`` local processes (spawned, one session each)."""
    _check_picklable(dataset)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    blocks = split_blocks(tasks, workers)
    procs = [
        ctx.Process(
            target=_worker_main, args=(plan, dataset, str(store), b, threads, results), daemon=True
        )
        for b in blocks
    ]
    for p in procs:
        p.start()
    running = len(procs)
    try:
        while running:
            try:
                kind, payload = results.get(timeout=1.0)
            except _queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise OnnxcompError(
                        f"a labelling worker process died (exit code {dead[0].exitcode}); "
                        "when calling label() with workers > 1 from a script, guard it with "
                        "`if __name__ == '__main__':` (workers are spawned)"
                    ) from None
                continue
            if kind == "done":
                finished(payload)
            elif kind == "exit":
                running -= 1
            else:
                raise payload
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)
        results.close()


class _RayShardWorker:
    """Ray actor body: one ShardWorker (one ONNX Runtime session) per actor."""

    def __init__(self, plan: Any, dataset: Dataset, store: str, threads: int | None) -> None:
        from onnxcomp.distill._label import ShardWorker

        self.worker = ShardWorker(plan, dataset, store, threads=threads)

    def run_shard(self, index: int, start: int, count: int) -> ShardResult:
        return self.worker.run_shard(index, start, count)


def run_ray(
    plan: Any,
    dataset: Dataset,
    store: Path,
    tasks: Sequence[Task],
    workers: int,
    threads: int | None,
    finished: Callable[[ShardResult], None],
) -> None:
    """Compute ``tasks`` on Ray actors (connects to a running cluster, else starts a local one)."""
    try:
        import ray
    except ImportError as e:
        raise InvalidInputError(
            "--engine ray needs the optional package 'ray' (pip install ray)"
        ) from e
    _check_picklable(dataset)
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=max(workers, 1), **kwargs)
        started = True
    actor_cls: Any = ray.remote(num_cpus=1)(_RayShardWorker)
    blocks = split_blocks(tasks, workers)
    actors: list[Any] = [actor_cls.remote(plan, dataset, str(store), threads) for _ in blocks]
    try:
        queues = [list(b) for b in blocks]
        inflight: dict[Any, int] = {}

        def submit(a: int) -> None:
            if queues[a]:
                index, start, count = queues[a].pop(0)
                inflight[actors[a].run_shard.remote(index, start, count)] = a

        for a in range(len(actors)):
            submit(a)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                a = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    if isinstance(cause, OnnxcompError):
                        raise cause from e
                    raise OnnxcompError(f"a Ray labelling task failed: {e}") from e
                finished(result)
                submit(a)
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # pragma: no cover - best effort
                pass
        if started:
            ray.shutdown()
