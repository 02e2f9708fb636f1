"""The scoring worker on a GPU-class image model, against its slowest stage run alone.

    python bench/gpu_worker.py                  # the GPU configuration (about 2-3 minutes)
    python bench/gpu_worker.py --tiny           # a seconds-long CPU run (what `make test` runs)

A folder of JPEG photos on local disk (samples/imagenet/prepare_data.py: crops of
scikit-learn's sample photos at varied sizes) is scored by the ImageNet-style sample
(samples/imagenet: ResNet-50, batched, JPEGs decoded on threads or the GPU's decoder)
through the scoring runtime's worker pool — spawned worker processes, one mini-batch
prefetched per slot, results encoded into output lines in the worker — exactly as a
scoring host runs it, minus storage (a GPU machine has no Azurite). In the same run it
measures each stage alone:
  - the model on in-memory uint8 tensors already on the device, at the sample's batch size
    and dtype (normalisation included);
  - JPEG decode + resize on every CPU core (the sample's decoder, all cores);
  - JPEG decode + resize on the GPU's decoder, when torchvision has one for this GPU;
  - the naive path: one file at a time, decoded then scored in a forward pass of one.
It prints the device, the figures and the ratios — worker ÷ min(model, best decoder) (the
claim: ≥ 0.8 on a GPU) and worker ÷ naive — and writes bench/results/gpu_worker.json.
It needs torch, numpy, pandas, Pillow, psutil and scikit-learn; torchvision is optional
(the sample defines ResNet-50 itself when torchvision does not import). Exit 0 when the
claim is met (or, on a CPU, when the run was sane), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.report import now_utc, write_results  # noqa: E402
from samples.imagenet.prepare_data import make_jpegs  # noqa: E402
from shared.scoring.gpus import detect_gpus  # noqa: E402
from shared.scoring.pool import SLOT_DEPTH, WorkerPool, worker_cpu_threads  # noqa: E402
from shared.worker.protocol import WorkerSpec  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "imagenet" / "deployment"
CODE = SAMPLE / "code"
GOAL = 0.8
TINY = {"files": 16, "mini_batch_size": 8, "concurrency": 1, "image_size": 32, "resize": 36,
        "min_side": 48, "max_side": 96, "naive_files": 2, "model_batches": 1,
        "worker_passes": 1}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started_at = now_utc()
    work = Path(tempfile.mkdtemp(prefix="batchfn-bench-gpu-"))
    try:
        figures = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    claims = _claims(figures)
    path = write_results("gpu_worker", figures, _settings(args), started_at, claims,
                         path=args.results)
    for line in _summary(figures):
        print(line)
    print(f"results: {path}")
    gpu = figures["device"]["type"] == "cuda"
    return 0 if all(c["met"] for c in claims.values()) or (not gpu and _sane(figures)) else 1


def measure(args: argparse.Namespace, work: Path) -> dict:
    """Every figure of one run (see the module docstring)."""
    jpegs = _photos(args, work / "jpegs")
    model_dir = _model_folder(args, work / "model")
    os.environ["AZUREML_MODEL_DIR"] = str(model_dir)
    sample, imaging = _load_sample()
    sample.init()
    device = sample.device
    batch = sample.chunk or args.mini_batch_size
    say(f"device {_device_name(device)}, {sample.dtype}, model batch {batch}")

    model_rate = _model_alone(sample, batch, args.model_batches)
    say(f"model alone: {model_rate:.0f} images/s")
    decode_cpu = _decode_alone(imaging.CpuDecoder(args.resize, args.image_size,
                                                  threads=_cores(), pin=device.type == "cuda"),
                               jpegs, batch, device)
    say(f"decode + resize on {_cores()} CPU threads: {decode_cpu:.0f} images/s")
    decode_gpu = None
    if imaging.gpu_decoder_available(device):
        decode_gpu = _decode_alone(imaging.GpuDecoder(args.resize, args.image_size, device,
                                                      threads=_cores()), jpegs, batch, device)
        say(f"decode + resize on the GPU decoder: {decode_gpu:.0f} images/s")
    naive = _naive(sample, imaging, jpegs[:args.naive_files], args)
    say(f"naive path: {naive:.1f} images/s")
    decoder = type(sample.decoder).__name__
    del sample.model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    worker = _worker_pool(args, jpegs, model_dir, work)
    say(f"worker pool ({args.concurrency} workers): {worker['images_per_second']:.0f} images/s")
    slowest = min(model_rate, max(decode_cpu, decode_gpu or 0.0))
    return {
        "device": {"type": device.type, "name": _device_name(device),
                   "dtype": str(sample.dtype).removeprefix("torch."),
                   "sample_decoder": decoder, "cpu_cores": _cores()},
        "images": len(jpegs),
        "jpeg_megabytes": round(sum(p.stat().st_size for p in jpegs) / 1e6, 1),
        "model_batch": batch,
        "stages_alone_images_per_second": {
            "model_on_device_tensors": round(model_rate, 1),
            "decode_resize_cpu_cores": round(decode_cpu, 1),
            "decode_resize_gpu_decoder": round(decode_gpu, 1) if decode_gpu else None,
            "slowest_stage": round(slowest, 1),
        },
        "worker_pool": worker,
        "naive_images_per_second": round(naive, 2),
        "efficiency_vs_slowest_stage": round(worker["images_per_second"] / slowest, 3),
        "speedup_vs_naive": round(worker["images_per_second"] / naive, 1),
    }


def _photos(args: argparse.Namespace, folder: Path) -> list[Path]:
    started = time.perf_counter()
    jpegs = make_jpegs(folder, args.files, min_side=args.min_side, max_side=args.max_side)
    say(f"{len(jpegs)} JPEGs ({args.min_side}-{args.max_side} px) written in "
        f"{time.perf_counter() - started:.1f}s")
    return jpegs


def _model_folder(args: argparse.Namespace, root: Path) -> Path:
    """The sample's model folder, with this run's image size: $AZUREML_MODEL_DIR."""
    shutil.copytree(SAMPLE / "model", root / "model")
    config_path = root / "model" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(image_size=args.image_size, resize=args.resize)
    config_path.write_text(json.dumps(config))
    return root


def _load_sample():  # noqa: ANN202 - the scoring script and its decoders, as modules
    sys.path.insert(0, str(CODE))
    import batch_driver
    import imaging

    return batch_driver, imaging


def _model_alone(sample, batch: int, batches: int) -> float:  # noqa: ANN001
    """Images/s of the model on uint8 NHWC tensors already on the device."""
    size = sample.config["image_size"]
    pixels = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8,
                           device=sample.device)
    sample._forward(pixels)
    _sync(sample.device)
    started = time.perf_counter()
    for _ in range(batches):
        sample._forward(pixels)
    _sync(sample.device)
    return batch * batches / (time.perf_counter() - started)


def _decode_alone(decoder, jpegs: list[Path], batch: int,  # noqa: ANN001
                  device: torch.device) -> float:
    """Images/s of decoding + resizing every file, in batches, nothing else."""
    paths = [str(p) for p in jpegs]
    decoder.decode(paths[:batch])  # warm: thread pool, decoder state, page cache
    _sync(device)
    started = time.perf_counter()
    for start in range(0, len(paths), batch):
        decoder.decode(paths[start:start + batch])
    _sync(device)
    return len(paths) / (time.perf_counter() - started)


def _naive(sample, imaging, jpegs: list[Path],  # noqa: ANN001
           args: argparse.Namespace) -> float:
    """Images/s of one file at a time: decode, then a forward pass of one image."""
    started = time.perf_counter()
    for path in jpegs:
        pixels = torch.tensor(imaging.decode_file(str(path), args.resize,
                                                  args.image_size)).unsqueeze(0)
        sample._forward(pixels).float().softmax(dim=-1).max(dim=-1)[1].cpu()
    return len(jpegs) / (time.perf_counter() - started)


def _worker_pool(args: argparse.Namespace, jpegs: list[Path], model_dir: Path,
                 work: Path) -> dict:
    """Images/s of the files scored through the runtime's worker pool, warm."""
    spec = WorkerSpec(script_path=str(CODE / "batch_driver.py"), code_dir=str(CODE),
                      model_dir=str(model_dir),
                      cpu_threads=worker_cpu_threads(args.concurrency))
    pool = WorkerPool(spec, args.concurrency, scratch_dir=work / "logs", gpus=detect_gpus())
    paths = [str(p) for p in jpegs]
    batches = [paths[i:i + args.mini_batch_size]
               for i in range(0, len(paths), args.mini_batch_size)] * args.worker_passes
    output = work / "outputs"
    output.mkdir()

    def score(files: list[str]) -> int:
        result = pool.run(files, 600, str(output), output_format="azureml")
        if result.status != "succeeded":
            raise RuntimeError(f"mini-batch {result.status}: {result.error}\n{result.log}")
        return result.rows

    threads = ThreadPoolExecutor(args.concurrency * SLOT_DEPTH)
    try:
        started = time.perf_counter()
        list(threads.map(score, batches[:args.concurrency]))  # init() in every worker
        warm_s = time.perf_counter() - started
        started = time.perf_counter()
        rows = sum(threads.map(score, batches))
        seconds = time.perf_counter() - started
    finally:
        threads.shutdown()
        pool.close()
    scored = len(paths) * args.worker_passes
    if rows != scored:
        raise RuntimeError(f"the workers returned {rows} rows for {scored} images")
    return {"images_per_second": round(scored / seconds, 1), "seconds": round(seconds, 2),
            "mini_batches": len(batches), "start_and_first_batches_s": round(warm_s, 2),
            "workers": args.concurrency}


def _claims(figures: dict) -> dict:
    measured = figures["efficiency_vs_slowest_stage"]
    return {"efficiency_vs_slowest_stage": {
        "measured": measured, "goal": f">= {GOAL} (on a GPU)",
        "met": figures["device"]["type"] == "cuda" and measured >= GOAL}}


def _sane(figures: dict) -> bool:
    stages = figures["stages_alone_images_per_second"]
    return (figures["worker_pool"]["images_per_second"] > 0 and stages["slowest_stage"] > 0
            and figures["naive_images_per_second"] > 0)


def _summary(figures: dict) -> list[str]:
    stages = figures["stages_alone_images_per_second"]
    device = figures["device"]
    return [
        f"device: {device['name']} ({device['dtype']}, sample decoder "
        f"{device['sample_decoder']}, {device['cpu_cores']} CPU cores)",
        f"model alone (batch {figures['model_batch']}): "
        f"{stages['model_on_device_tensors']:.0f} images/s",
        f"decode + resize, CPU cores: {stages['decode_resize_cpu_cores']:.0f} images/s",
        "decode + resize, GPU decoder: " + (f"{stages['decode_resize_gpu_decoder']:.0f} images/s"
                                            if stages["decode_resize_gpu_decoder"]
                                            else "not available"),
        f"worker pool: {figures['worker_pool']['images_per_second']:.0f} images/s",
        f"naive (one image at a time): {figures['naive_images_per_second']:.1f} images/s",
        f"worker / slowest stage: {figures['efficiency_vs_slowest_stage']:.2f} "
        f"(goal >= {GOAL} on a GPU)",
        f"worker / naive: {figures['speedup_vs_naive']:.1f}x",
    ]


def _settings(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in (
        "files", "mini_batch_size", "concurrency", "image_size", "resize", "min_side",
        "max_side", "naive_files", "model_batches", "worker_passes", "tiny")}


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({_cores()} cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def say(text: str) -> None:
    print(f"[gpu_worker] {text}", flush=True)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="a seconds-long CPU configuration (overrides the sizes below)")
    parser.add_argument("--files", type=int, default=8192)
    parser.add_argument("--mini-batch-size", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=2,
                        help="worker processes (max_concurrency_per_instance)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--min-side", type=int, default=200)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--naive-files", type=int, default=256)
    parser.add_argument("--model-batches", type=int, default=30)
    parser.add_argument("--worker-passes", type=int, default=2,
                        help="times the worker pool scores the whole folder (timed together)")
    parser.add_argument("--results", type=Path, default=None,
                        help="where to write the results (default bench/results/gpu_worker.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    for key in ("files", "mini_batch_size", "concurrency", "image_size", "resize",
                "naive_files", "model_batches", "worker_passes"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.resize < args.image_size:
        parser.error("--resize must be at least --image-size")
    args.naive_files = min(args.naive_files, args.files)
    return args


if __name__ == "__main__":
    sys.exit(main())
