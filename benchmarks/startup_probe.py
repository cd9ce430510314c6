"""Start-up of an engine process, in pieces: does waking the GPU (CUDA context, cuBLAS/cuDNN handles, the first
kernels) on a thread overlap with importing torch._dynamo and diffusers on the main thread?

One fresh process per run (what a daemon start pays): `--mode serial` wakes the GPU after the imports, `--mode
overlap` on a thread started right after `import torch`. Prints one JSON line of seconds since process start.
Usage: for m in serial overlap serial overlap; do python benchmarks/startup_probe.py --mode $m; done
"""
import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402


def wake_gpu(marks: dict) -> None:
    import torch
    import torch.nn.functional as F

    torch.cuda.set_device(0)
    torch.cuda.init()
    marks["context"] = time.perf_counter() - T0
    x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    (x @ x).sum().item()
    marks["cublas"] = time.perf_counter() - T0
    F.conv2d(torch.randn(1, 16, 32, 32, device="cuda"), torch.randn(16, 16, 3, 3, device="cuda")).sum().item()
    q = torch.randn(1, 2, 64, 128, device="cuda", dtype=torch.bfloat16)
    F.scaled_dot_product_attention(q, q, q).sum().item()
    marks["kernels"] = time.perf_counter() - T0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("serial", "overlap"), default="serial")
    ap.add_argument("--imports", default="torch._dynamo,diffusers.models.transformers.transformer_wan")
    a = ap.parse_args()
    marks: dict = {}
    import torch  # noqa: F401

    marks["torch"] = time.perf_counter() - T0
    th = threading.Thread(target=wake_gpu, args=(marks,)) if a.mode == "overlap" else None
    if th:
        th.start()
    for name in a.imports.split(","):
        try:
            __import__(name)
        except ImportError as e:
            marks[f"missing {name}"] = str(e)
        marks[name] = time.perf_counter() - T0
    if th:
        th.join()
    else:
        wake_gpu(marks)
    marks["total"] = time.perf_counter() - T0
    print(json.dumps({"mode": a.mode, **{k: round(v, 3) if isinstance(v, float) else v for k, v in marks.items()}}))


if __name__ == "__main__":
    main()
