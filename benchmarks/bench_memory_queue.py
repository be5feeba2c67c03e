"""Time and peak memory of SupCon against a memory queue of 65 536 keys.

One forward + backward pass of ``supcon_loss`` for ``--batch`` samples × 2 views
(the anchors, D = 128, float32, 100 classes) against ``--queue`` reference keys
(a :class:`~contrast_attn.MemoryQueue`'s contents), on CPU with one thread.
Paths: the dense path (forced by raising the dense threshold), the tiled kernel
(automatic chunk size), and the hard-negative/debiased denominators (beta = 0.5,
tau+ = 0.1) dense and in recomputed row tiles. Every case runs in its own
subprocess; peak memory is the peak resident set (``ru_maxrss``) minus the resident
set after the inputs are built. Time is the median of ``--repeats`` passes after one
warm-up (process CPU time).

Usage::

    python benchmarks/bench_memory_queue.py            # --batch 128 --queue 65536
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = {
    "dense": {"dense": True},
    "tiled (auto)": {},
    "hard+debiased dense": {"dense": True, "hard": True},
    "hard+debiased tiled (32 rows)": {"hard": True, "chunk_size": 32},
}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run_case(name: str, batch: int, queue: int, repeats: int) -> dict[str, float]:
    import torch

    from contrast_attn import MemoryQueue
    from contrast_attn import _rows as rows
    from contrast_attn.functional import supcon_loss

    torch.set_num_threads(1)
    options = CASES[name]
    if options.get("dense"):
        rows.DENSE_MAX_PAIRS = 1 << 62
    gen = torch.Generator().manual_seed(0)
    memory = MemoryQueue(queue, 128)
    memory.enqueue(
        torch.randn(queue, 128, generator=gen), torch.randint(0, 100, (queue,), generator=gen)
    )
    features = torch.randn(batch, 2, 128, generator=gen, requires_grad=True)
    labels = torch.randint(0, 100, (batch,), generator=gen)
    refs, ref_labels = memory.contents()
    kwargs = {"chunk_size": options.get("chunk_size")}
    if options.get("hard"):
        kwargs.update(hard_negative_beta=0.5, debias_tau_plus=0.1)
    base = _rss_mib()
    times = []
    for _ in range(repeats + 1):
        start = time.process_time()
        loss = supcon_loss(features, labels, ref_features=refs, ref_labels=ref_labels, **kwargs)
        loss.backward()
        times.append(time.process_time() - start)
    return {"ms": 1000 * statistics.median(times[1:]), "peak_mib": _rss_mib() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--queue", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(_run_case(args.case, args.batch, args.queue, args.repeats)))
        return
    print(f"SupCon, {2 * args.batch} anchors vs {args.queue} queued keys, D = 128, CPU, 1 thread")
    print("| path | time (fwd + bwd) | peak extra memory |\n|---|---:|---:|")
    for name in CASES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                name,
                "--batch",
                str(args.batch),
                "--queue",
                str(args.queue),
                "--repeats",
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {name} | {result['ms']:.0f} ms | {result['peak_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
