"""sslkit.eval.landscape against PyHessian (Yao et al. 2020; ``pip install pyhessian``) on one
model, batch and loss: timm's ``test_resnet`` (10 classes, eval mode, which PyHessian imposes),
random 32 px images and labels, mean cross-entropy. Measured: the top Hessian eigenvalue (PyHessian's
power iteration, relative-change tolerance 1e-3; ours Lanczos to residual <= 1e-3 |lambda|) and
Hutchinson's trace from the same number of Rademacher probes (PyHessian with tol=0 so that it draws
them all), each with our two Hessian-vector-product engines. With ``--batches N`` the loss is the
mean over N batches, a data set: PyHessian's ``dataloader`` path (a forward and backward per batch
per product) against our list of closures (a forward and backward per batch serves ``--probe-batch``
trace probes).

Time: every method once to warm up, then ``--repeats`` rounds taking the methods in turn; reported is
the fastest round of each (on a shared machine other work only adds time) and the median. Memory:
each method once more in a fresh process, the growth of its peak RSS over its RSS after set-up (CPU,
Linux) or its peak CUDA allocation (GPU).

    python tests/benchmarks/bench_landscape.py [--device cuda] [--batch 32] [--batches 1] [--repeats 3]
        [--samples 40] [--probe-batch 8] [--out r.json]
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

METHODS = ("pyhessian", "double-backward", "forward-over-reverse")
TASKS = ("eigenvalue", "trace")


def setup(device: str, batch: int, batches: int):
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10).to(device).eval()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, 3, 32, 32, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device)) for _ in range(batches)]
    return model, data


def runner(task: str, method: str, model, data, samples: int, probe_batch: int) -> Callable[[], dict]:
    """A call computing ``task`` with ``method`` on the mean loss over the batches in ``data`` (PyHessian:
    ``data=`` for one batch, else ``dataloader=``); it returns value, (stderr,) and products taken."""
    import torch
    import torch.nn.functional as F

    params = [p for p in model.parameters() if p.requires_grad]
    if method == "pyhessian":
        ph = importlib.import_module("pyhessian.hessian")  # the module: pyhessian.hessian names the class
        count, product, over_data = [0], ph.hessian_vector_product, ph.hessian.dataloader_hv_product

        def counted(*args):
            count[0] += 1
            return product(*args)

        def counted_over_data(*args):
            count[0] += 1
            return over_data(*args)

        ph.hessian_vector_product, ph.hessian.dataloader_hv_product = counted, counted_over_data

        def run() -> dict:
            count[0] = 0
            torch.manual_seed(2)
            source = {"data": data[0]} if len(data) == 1 else {"dataloader": data}
            H = ph.hessian(model, torch.nn.CrossEntropyLoss(), **source, cuda=data[0][0].is_cuda)
            if task == "eigenvalue":
                out = {"value": float(H.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0])}
            else:
                values = torch.tensor(H.trace(maxIter=samples, tol=0.0), dtype=torch.float64)
                out = {"value": float(values.mean()), "stderr": float(values.std() / math.sqrt(len(values)))}
            for p in params:
                p.grad = None
            return {**out, "hvps": count[0]}

        return run

    from sslkit.eval.landscape import hessian_trace, top_eigenvalues

    closures = [lambda x=x, y=y: F.cross_entropy(model(x), y) for x, y in data]

    def run() -> dict:
        if task == "eigenvalue":
            r = top_eigenvalues(closures, params, tol=1e-3, model=model, hvp=method)
            return {"value": float(r.eigenvalues[0]), "hvps": r.hvps, "converged": r.converged}
        r = hessian_trace(closures, params, samples=samples, probe_batch=probe_batch, model=model, hvp=method)
        return {"value": r.estimate, "stderr": r.stderr, "hvps": r.samples}

    return run


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def resident_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process; unlike getrusage's ru_maxrss, VmHWM starts
    afresh in a new process image and is reset by writing 5 to /proc/self/clear_refs."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def memory(args, task: str, method: str) -> float:
    """Peak memory of one call in this (fresh) process, MiB."""
    import torch

    model, data = setup(args.device, args.batch, args.batches)
    run = runner(task, method, model, data, args.samples, args.probe_batch)
    cuda = data[0][0].is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = resident_mb("VmRSS")
    run()
    sync(args.device)
    if cuda:
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return resident_mb("VmHWM") - base


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=1, help="over several batches: a data set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=40, help="Hutchinson probes, both libraries")
    parser.add_argument("--probe-batch", type=int, default=8, help="our probes per batched product")
    parser.add_argument("--out", help="also write the results as JSON")
    parser.add_argument("--memory-of", nargs=2, metavar=("TASK", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(memory(args, *args.memory_of)))
        return

    model, data = setup(args.device, args.batch, args.batches)
    cases = [(task, method) for task in TASKS for method in METHODS]
    runs = {case: runner(*case, model, data, args.samples, args.probe_batch) for case in cases}
    rows = {case: {"task": case[0], "method": case[1], **runs[case](), "seconds": []} for case in cases}
    for _ in range(args.repeats):
        for case in cases:
            sync(args.device)
            start = time.perf_counter()
            runs[case]()
            sync(args.device)
            rows[case]["seconds"].append(time.perf_counter() - start)
    for case in cases:
        flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None and k != "out"]
        result = subprocess.run([sys.executable, __file__, *flags, "--memory-of", *case],
                                capture_output=True, text=True)
        if result.returncode:
            sys.exit(f"memory of {case} failed:\n{result.stderr[-3000:]}")
        rows[case]["memory_mb"] = json.loads(result.stdout.strip().splitlines()[-1])

    n = sum(p.numel() for p in model.parameters())
    unit = "peak CUDA MiB" if args.device != "cpu" else "peak RSS growth, MiB"
    print(f"test_resnet ({n:,} parameters), {args.batches} batch(es) of {args.batch} x 3 x 32 x 32, "
          f"cross-entropy, eval mode, "
          f"device {args.device}; fastest (median) of {args.repeats} rounds; trace from {args.samples} probes")
    print(f"| task | method | value | HVPs | s per call | speed vs PyHessian | {unit} |")
    print("|---|---|---|---|---|---|---|")
    for (task, method), r in rows.items():
        ref = rows[task, "pyhessian"]
        value = f"{r['value']:.4f}" + (f" ± {r['stderr']:.4f}" if "stderr" in r else "")
        value += " (not converged)" if r.get("converged") is False else ""
        name = "PyHessian 0.1" if method == "pyhessian" else f"sslkit, {method}"
        print(f"| {task} | {name} | {value} | {r['hvps']} | {min(r['seconds']):.2f} "
              f"({statistics.median(r['seconds']):.2f}) | {min(ref['seconds']) / min(r['seconds']):.2f}x | "
              f"{r['memory_mb']:.0f} |")
    import torch.nn.functional as F

    from sslkit.eval.landscape import top_eigenvalues

    exact = top_eigenvalues([lambda x=x, y=y: F.cross_entropy(model(x), y) for x, y in data],
                            list(model.parameters()), k=2, tol=1e-6, max_iter=200, model=model)
    top = float(exact.eigenvalues[0])
    print(f"top eigenvalue to residual <= 1e-6 |lambda| (Lanczos, {exact.hvps} products): {top:.5f}; "
          f"PyHessian's is {100 * (rows['eigenvalue', 'pyhessian']['value'] / top - 1):+.3f}% from it")
    for (task, method), r in rows.items():
        ref = rows[task, "pyhessian"]
        if method == "pyhessian":
            continue
        if task == "eigenvalue":
            print(f"top eigenvalue, {method}: {100 * (r['value'] / ref['value'] - 1):+.3f}% from PyHessian's, "
                  f"{100 * (r['value'] / top - 1):+.3f}% from the converged value")
        else:
            print(f"trace, {method}: {(r['value'] - ref['value']) / math.hypot(r['stderr'], ref['stderr']):+.2f} "
                  f"combined standard errors from PyHessian's (independent probes)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": list(rows.values())}, f, indent=1)


if __name__ == "__main__":
    main()
