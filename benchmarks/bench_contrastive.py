"""Speed and memory of NT-Xent and SupCon: ours against the peers and a matmul floor.

Every case (method × rows × device) runs in its own subprocess so that its peak
memory is honest: on CPU the peak resident set (``ru_maxrss``) minus the
process's resident set after imports and input creation; on CUDA the peak of
``torch.cuda.max_memory_allocated`` over the same baseline. A case that needs
more than ``--mem-cap-gb`` of extra memory (enforced on CPU by ``RLIMIT_AS``) or
raises an out-of-memory error is reported as OOM; one that runs past
``--timeout`` as a timeout.

Times are one forward + backward pass, the median of ``--repeats`` samples
after one warm-up (a sample repeats the step for at least 0.25 s; cases slower
than 20 s are timed on the warm-up and one more run), on 2N rows (two views of N samples) of dimension D = 128 in float32.
Ratios are taken against numbers measured in the same run: lightly's
``NTXentLoss`` (NT-Xent) or pytorch-metric-learning's ``SupConLoss`` (SupCon),
and the floor of two matmuls on the same embeddings (``S = Z Zᵀ`` then
``S Z``, the least any exact method must do; computed in row blocks where
``S`` would not fit, with the same flop count).

``--small`` measures what matters at the batch sizes most users run (512 and
1024 rows): the ratio of our time to a plain few-line autograd implementation,
with the value checks on. Both run in one process, one thread, interleaved
(ours, plain, ours, plain, ...) for ``--rounds`` rounds of ``--calls`` steps;
each round gives one ratio, and the table reports the median ratio and its
interquartile range. On CPU the clock is the process's CPU time
(``time.process_time``), which other processes on a busy machine do not
inflate; on CUDA it is wall time with a synchronisation after each step. The
host synchronisations of one step (``item``/``nonzero``/``unique``/``bincount``
and kin, counted by a dispatch mode) are reported alongside.

Usage::

    python benchmarks/bench_contrastive.py                      # the README table
    python benchmarks/bench_contrastive.py --rows 512 4096 --repeats 3
    python benchmarks/bench_contrastive.py --small              # 512/1024 rows vs plain autograd
    python benchmarks/bench_contrastive.py --small --device cuda
    python benchmarks/bench_contrastive.py --device cuda        # when present
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

DIM = 128
NT_XENT_TEMPERATURE = 0.5
SUPCON_TEMPERATURE = 0.1
NUM_CLASSES = 10
# A sample lasts at least this long (fast cases repeat the step inside it).
MIN_SAMPLE_S = 0.25
# Cases whose warm-up takes longer than this are timed on two runs only.
SLOW_CASE_S = 20.0
# Rows above which only our losses (and the blocked floor) are run.
PEER_MAX_ROWS = 16384

NT_XENT_METHODS = ["ours", "ours, no finite check", "lightly", "pml", "plain autograd"]
SUPCON_METHODS = ["ours", "ours, no finite check", "pml", "plain autograd"]


# --------------------------------------------------------------------- the methods


def _plain_nt_xent(z0: Any, z1: Any) -> Any:
    """The usual few-line SimCLR loss: full similarity matrix and cross-entropy."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z0, z1]), dim=1)
    rows = z.shape[0]
    logits = z @ z.T / NT_XENT_TEMPERATURE
    logits.fill_diagonal_(float("-inf"))
    target = torch.arange(rows, device=z.device).roll(rows // 2)
    return F.cross_entropy(logits, target)


def _plain_supcon(z0: Any, z1: Any, labels: Any) -> Any:
    """Khosla et al.'s reference SupCon code (L_out), masks as dense matrices."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z0, z1]), dim=1)
    rows = z.shape[0]
    all_labels = labels.repeat(2)
    mask = (all_labels[:, None] == all_labels[None, :]).float()
    logits = z @ z.T / SUPCON_TEMPERATURE
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = 1.0 - torch.eye(rows, device=z.device)
    mask = mask * not_self
    exp_logits = logits.exp() * not_self
    log_prob = logits - exp_logits.sum(dim=1, keepdim=True).log()
    return -((mask * log_prob).sum(dim=1) / mask.sum(dim=1)).mean()


def _floor(z0: Any, z1: Any) -> None:
    """Two matmuls on the embeddings: S = Z Zᵀ, then S Z (in row blocks if S is huge)."""
    import torch

    z = torch.cat([z0, z1]).detach()
    rows = z.shape[0]
    block = rows if rows <= PEER_MAX_ROWS else 4096
    for start in range(0, rows, block):
        similarity = z[start : start + block] @ z.T
        similarity @ z


def _make_step(loss: str, method: str, rows: int, device: Any) -> tuple[Callable[[], None], Any]:
    """The timed step (forward + backward) and the inputs it holds."""
    import torch

    import contrast_attn
    from contrast_attn.functional import nt_xent_loss, supcon_loss

    batch = rows // 2
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(batch, DIM, generator=gen).to(device).requires_grad_()
    z1 = torch.randn(batch, DIM, generator=gen).to(device).requires_grad_()
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=gen).to(device)
    inputs = (z0, z1, labels)
    if method == "ours, no finite check":
        contrast_attn.set_finite_checks(False)
        method = "ours"

    fn: Callable[[], Any]
    if method == "floor":
        fn = lambda: _floor(z0, z1)  # noqa: E731
    elif loss == "ntxent" and method == "ours":
        fn = lambda: nt_xent_loss(z0, z1, temperature=NT_XENT_TEMPERATURE)  # noqa: E731
    elif loss == "ntxent" and method == "lightly":
        from lightly.loss import NTXentLoss

        lightly_loss = NTXentLoss(temperature=NT_XENT_TEMPERATURE)
        fn = lambda: lightly_loss(z0, z1)  # noqa: E731
    elif loss == "ntxent" and method == "pml":
        from pytorch_metric_learning.losses import NTXentLoss as PMLNTXentLoss

        pml_nt_xent = PMLNTXentLoss(temperature=NT_XENT_TEMPERATURE)
        pair_labels = torch.arange(batch, device=device).repeat(2)
        fn = lambda: pml_nt_xent(torch.cat([z0, z1]), pair_labels)  # noqa: E731
    elif loss == "ntxent" and method == "plain autograd":
        fn = lambda: _plain_nt_xent(z0, z1)  # noqa: E731
    elif loss == "supcon" and method == "ours":
        views = lambda: torch.stack([z0, z1], dim=1)  # noqa: E731
        fn = lambda: supcon_loss(views(), labels, temperature=SUPCON_TEMPERATURE)  # noqa: E731
    elif loss == "supcon" and method == "pml":
        from pytorch_metric_learning.losses import SupConLoss

        pml_supcon = SupConLoss(temperature=SUPCON_TEMPERATURE)
        fn = lambda: pml_supcon(torch.cat([z0, z1]), labels.repeat(2))  # noqa: E731
    elif loss == "supcon" and method == "plain autograd":
        fn = lambda: _plain_supcon(z0, z1, labels)  # noqa: E731
    else:
        raise ValueError(f"unknown case {loss!r} / {method!r}")

    def step() -> None:
        out = fn()
        if out is not None:
            out.backward()
            z0.grad = z1.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, inputs


# ------------------------------------------------------------------ one case (child)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _virtual_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_case(
    loss: str, method: str, rows: int, device_name: str, repeats: int, cap_gb: float
) -> dict[str, Any]:
    """Time and measure one case in this process; returns a JSON-able dict."""
    import torch

    device = torch.device(device_name)
    step, _inputs = _make_step(loss, method, rows, device)
    # Start the thread pool before the baseline (its stacks count as virtual memory).
    torch.ones(64, 64) @ torch.ones(64, 64)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = _resident_bytes()
        cap = _virtual_bytes() + int(cap_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    times = []
    try:
        start = time.perf_counter()
        step()  # warm-up
        warm = time.perf_counter() - start
        if warm >= SLOW_CASE_S:
            # Minutes-long cases: the warm-up counts as a sample, plus one more run.
            times.append(warm)
            repeats = 1
        # Each sample repeats the step for at least MIN_SAMPLE_S, so that fast cases
        # are not at the mercy of the timer and of single scheduler hiccups.
        calls = max(1, math.ceil(MIN_SAMPLE_S / max(warm, 1e-6)))
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                step()
            times.append((time.perf_counter() - start) / calls)
    except (MemoryError, RuntimeError) as error:
        if "memory" not in str(error).lower() and not isinstance(error, MemoryError):
            raise
        return {"status": "OOM"}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        total = peak
    else:
        total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = total
    return {
        "status": "ok",
        "time_s": statistics.median(times),
        "times_s": times,
        "extra_bytes": max(0, peak - baseline),
        "peak_bytes": total,
    }


# ------------------------------------------------------- small batches (one process)

SYNC_OP_NAMES = (
    "_local_scalar_dense",
    "nonzero",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "bincount",
    "masked_select",
)


def count_syncs(step: Callable[[], None]) -> int:
    """Host synchronisations of one call of ``step`` (aten ops that read device values)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            if func.overloadpacket.__name__ in SYNC_OP_NAMES:
                Counter.count += 1
            return func(*args, **(kwargs or {}))

    original = torch.Tensor.tolist

    def tolist(self: Any) -> Any:
        Counter.count += 1
        return original(self)

    torch.Tensor.tolist = tolist  # type: ignore[method-assign]
    try:
        with Counter():
            step()
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]
    return Counter.count


def small_batch_ratios(
    rows_list: list[int], device_name: str, rounds: int, calls: int, losses: list[str]
) -> str:
    """Ours (checks on) against plain autograd, interleaved in one process; a markdown table."""
    import torch

    device = torch.device(device_name)
    if device.type == "cpu":
        torch.set_num_threads(1)
        clock = time.process_time
    else:
        clock = time.perf_counter
    lines = [
        f"**Small batches, {device_name}** (ours with value checks on ÷ plain autograd; "
        f"{rounds} interleaved rounds of {calls} steps; "
        f"{'CPU process time, 1 thread' if device.type == 'cpu' else 'wall time'})",
        "",
        "| loss | rows 2N | ours | plain autograd | ratio (median) | ratio IQR "
        "| syncs/step ours | syncs/step plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for loss in losses:
        for rows in rows_list:
            ours, _ = _make_step(loss, "ours", rows, device)
            plain, _ = _make_step(loss, "plain autograd", rows, device)
            for step in (ours, plain, ours, plain):
                step()  # warm-up
            syncs = (count_syncs(ours), count_syncs(plain))
            times: dict[str, list[float]] = {"ours": [], "plain": []}
            ratios = []
            for _ in range(rounds):
                for name, step in (("ours", ours), ("plain", plain)):
                    start = clock()
                    for _ in range(calls):
                        step()
                    times[name].append((clock() - start) / calls)
                ratios.append(times["ours"][-1] / times["plain"][-1])
            quartiles = statistics.quantiles(ratios, n=4)
            name = "NT-Xent" if loss == "ntxent" else "SupCon"
            lines.append(
                f"| {name} | {rows} | {statistics.median(times['ours']) * 1e3:.2f} ms "
                f"| {statistics.median(times['plain']) * 1e3:.2f} ms "
                f"| {statistics.median(ratios):.3f}× | {quartiles[0]:.3f}–{quartiles[2]:.3f} "
                f"| {syncs[0]} | {syncs[1]} |"
            )
            print(f"  {lines[-1]}", file=sys.stderr, flush=True)
    return "\n".join(lines)


# ---------------------------------------------------------------- the driver (parent)


def _spawn(
    loss: str, method: str, rows: int, device: str, args: argparse.Namespace
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--case",
        json.dumps([loss, method, rows, device]),
        "--repeats",
        str(args.repeats),
        "--mem-cap-gb",
        str(args.mem_cap_gb),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    if done.returncode != 0:
        # Killed by the kernel (out of memory) or another failure.
        tail = done.stderr.strip().splitlines()[-1:] if done.stderr else []
        return {"status": "OOM" if done.returncode in (-9, 137) else "failed", "error": tail}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _fmt_time(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return result["status"]
    seconds = result["time_s"]
    return f"{seconds * 1e3:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _fmt_ratio(value: dict[str, Any], reference: dict[str, Any] | None, key: str) -> str:
    if value["status"] != "ok" or reference is None or reference["status"] != "ok":
        return "–"
    if reference[key] <= 0:
        return "–"
    return f"{value[key] / reference[key]:.2f}×"


def _fmt_mb(result: dict[str, Any], key: str) -> str:
    return f"{result[key] / 2**20:.0f} MB" if result["status"] == "ok" else "–"


def _table(
    title: str,
    reference: str,
    methods: list[str],
    results: dict[tuple[str, int], dict[str, Any]],
    rows_list: list[int],
) -> str:
    lines = [
        f"**{title}** (ratios against {reference} and the two-matmul floor, same run)",
        "",
        f"| rows 2N | method | time | × {reference} | × floor | extra memory | memory × {reference} | peak RSS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in rows_list:
        ref = results.get((reference, rows))
        floor = results.get(("floor", rows))
        for method in ["floor", *methods]:
            result = results.get((method, rows))
            if result is None:
                continue
            lines.append(
                f"| {rows} | {method} | {_fmt_time(result)} | {_fmt_ratio(result, ref, 'time_s')} "
                f"| {_fmt_ratio(result, floor, 'time_s')} | {_fmt_mb(result, 'extra_bytes')} "
                f"| {_fmt_ratio(result, ref, 'extra_bytes')} | {_fmt_mb(result, 'peak_bytes')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 4096, 8192, 16384, 65536])
    parser.add_argument(
        "--device", nargs="+", default=None, help="cpu and/or cuda (default: all present)"
    )
    parser.add_argument(
        "--loss", nargs="+", default=["ntxent", "supcon"], choices=["ntxent", "supcon"]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mem-cap-gb", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="only these methods (and the floor)"
    )
    parser.add_argument(
        "--small", action="store_true", help="512/1024-row ratios against plain autograd"
    )
    parser.add_argument("--rounds", type=int, default=41, help="--small: interleaved rounds")
    parser.add_argument("--calls", type=int, default=10, help="--small: steps per round")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case is not None:
        loss, method, rows, device = json.loads(args.case)
        print(json.dumps(run_case(loss, method, rows, device, args.repeats, args.mem_cap_gb)))
        return

    import torch

    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if args.small:
        rows_list = args.rows if args.rows != parser.get_default("rows") else [512, 1024]
        for device in devices:
            print(small_batch_ratios(rows_list, device, args.rounds, args.calls, args.loss))
            print()
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    raw: dict[str, Any] = {}
    for device in devices:
        floors: dict[tuple[str, int], dict[str, Any]] = {}
        for loss in args.loss:
            methods = NT_XENT_METHODS if loss == "ntxent" else SUPCON_METHODS
            reference = "lightly" if loss == "ntxent" else "pml"
            results: dict[tuple[str, int], dict[str, Any]] = {}
            for rows in args.rows:
                for method in ["floor", *methods]:
                    if args.methods and method != "floor" and method not in args.methods:
                        continue
                    if rows > PEER_MAX_ROWS and not method.startswith(("ours", "floor")):
                        continue
                    if method == "ours, no finite check" and rows > 4096:
                        continue  # the scan is negligible beside the N² work
                    if method == "floor" and ("floor", rows) in floors:
                        results[("floor", rows)] = floors[("floor", rows)]
                        continue
                    result = _spawn(loss, method, rows, device, args)
                    results[(method, rows)] = result
                    if method == "floor":
                        floors[("floor", rows)] = result
                    raw[f"{device}/{loss}/{method}/{rows}"] = result
                    print(
                        f"  {device} {loss} {rows} {method}: {_fmt_time(result)}",
                        file=sys.stderr,
                        flush=True,
                    )
            name = "NT-Xent" if loss == "ntxent" else "SupCon"
            print()
            print(_table(f"{name}, {device}", reference, methods, results, args.rows), flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(raw, handle, indent=1)


if __name__ == "__main__":
    main()
