"""Training throughput of D2STrainer on MSCOCO-shaped synthetic vectors.

MSCOCO Karpathy train+restval: 113,287 images, 566,435 captions; BLIP's ITC vectors are 256-d; batch 512.
On CPU a full epoch takes too long to wait for, so ``--steps`` optimiser steps are timed (after
``--warmup-steps`` untimed ones) and the epoch and 200-epoch times are projected from them. Where a GPU is
present, ``--full`` runs the whole job (``--epochs``, default 200) and reports its wall time and peak memory.

    python benchmarks/train_speed.py --steps 20            # CPU: samples/s, projected epoch time
    python benchmarks/train_speed.py --full --epochs 200   # GPU: the paper's whole job
    python benchmarks/train_speed.py --nproc 1 2           # data-parallel: 1 and 2 ranks (gloo on CPU,
                                                           # NCCL on GPUs), the same global batch

With ``--nproc``, each N runs as N processes (spawned here, joined through torch.distributed as torchrun
would) training on one global batch of ``--batch-size``; ``samples_per_second`` counts global-batch
samples, and ``bytes_per_step`` is what rank 0 hands to collectives per step (the gathered |V|-wide sparse
outputs, the gather's backward and the gradient all-reduce). Prints one JSON object as its last line (with
``--nproc``: one per N, under ``"runs"``).

``--trainer suggest`` times the image-suggestion bi-encoder (``--preset``, default M4, on the frozen offline
all-MiniLM-L6-v2) instead, on ``--images`` synthetic pairs (a query and a caption of 12 random vocabulary
words, a ``--dim``-d image vector); the token states are computed once before the timed steps, as the
trainer does for a frozen backbone. With ``--nproc``, ``bytes_per_step`` is both towers' gathered |V|-wide
outputs (forward and backward) and the heads' gradient all-reduce:

    python benchmarks/train_speed.py --trainer suggest --images 2000 --batch-size 256 --nproc 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pyterrier_d2s.data.synthetic import coco_shaped_pairs
from pyterrier_d2s.training import D2STrainer, TrainConfig
from pyterrier_d2s.training.distributed import free_port, set_local_environment
from pyterrier_d2s.vocab import Vocabulary


class _Stop(Exception):
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=113_287)
    ap.add_argument("--captions-per-image", type=int, default=5)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (CPU mode)")
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="run the whole job (meant for a GPU)")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--exp", default="c+w")
    ap.add_argument("--device", default=None)
    ap.add_argument(
        "--vocab",
        default=None,
        help="vocabulary dir (vocab.txt + model.safetensors with the word embeddings); default: the offline one",
    )
    ap.add_argument("--log", default=None, help="append one JSON line per epoch to this file (full mode)")
    ap.add_argument(
        "--nproc",
        type=int,
        nargs="+",
        default=None,
        help="time the steps with each of these numbers of ranks",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--trainer", choices=("d2s", "suggest"), default="d2s")
    ap.add_argument("--preset", default="M4", help="with --trainer suggest: M1..M4")
    args = ap.parse_args()
    if args.nproc:
        print(json.dumps({"benchmark": "train_speed", "runs": [_ranks(args, n) for n in args.nproc]}))
        return
    print(json.dumps(_run_suggest(args) if args.trainer == "suggest" else _run(args)))


def _ranks(args: argparse.Namespace, nproc: int) -> dict:
    """The steps timing with ``nproc`` spawned ranks; rank 0's result."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        mp.spawn(_rank, args=(nproc, free_port(), args, str(out)), nprocs=nproc)
        return {"nproc": nproc, **json.loads(out.read_text())}


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    set_local_environment(rank, world, port)
    if torch.cuda.is_available() and args.device is None:
        args.device = f"cuda:{rank}"  # one GPU per rank
    result = _run_suggest(args) if args.trainer == "suggest" else _run(args)
    if rank == 0:
        Path(out).write_text(json.dumps(result))


def _run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = coco_shaped_pairs(args.images, args.captions_per_image, args.dim, val_images=args.val_images)
    n_train = (args.images - args.val_images) * args.captions_per_image
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    make_s = time.perf_counter() - t0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # the published setting (all 30,522 output tokens): what the GPU timing targets were set for
    config = TrainConfig(exp=args.exp, recipe="paper", epochs=args.epochs, batch_size=args.batch_size)
    vocab = Vocabulary(args.vocab) if args.vocab else None
    result: dict = {
        "benchmark": "train_speed",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "images": args.images,
        "captions": args.images * args.captions_per_image,
        "train_captions": n_train,
        "dim": args.dim,
        "batch_size": args.batch_size,
        "steps_per_epoch": steps_per_epoch,
        "exp": args.exp,
        "data_seconds": round(make_s, 1),
    }

    if args.full:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        log = open(args.log, "a", encoding="utf-8") if args.log else None

        def epoch_log(event: str, info: dict) -> None:
            if event == "epoch" and log is not None:
                log.write(json.dumps({**info, "seconds": round(time.perf_counter() - t, 2)}) + "\n")
                log.flush()

        trainer = D2STrainer(config, vocab=vocab, device=device, callbacks=[epoch_log])
        fit = trainer.fit(data)
        result.update(
            mode="full",
            epochs=args.epochs,
            seconds=round(time.perf_counter() - t, 1),
            best_val_r1=fit.best_r1,
            peak_gpu_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda"
            else None,
        )
    else:
        stamps: list[float] = []
        sent: list[int] = []

        def clock(event: str, info: dict) -> None:
            if event == "step":
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                stamps.append(time.perf_counter())
                sent.append(trainer.dist.bytes_sent)
                if len(stamps) > args.warmup_steps + args.steps:
                    raise _Stop

        t = time.perf_counter()
        trainer = D2STrainer(config, vocab=vocab, device=device, callbacks=[clock], progress=False)
        try:
            trainer.fit(data)
        except _Stop:
            pass
        timed = np.diff(stamps[args.warmup_steps :])
        result.update(
            world_size=trainer.dist.world,
            bytes_per_step=int(np.median(np.diff(sent[args.warmup_steps :]))),
        )
        step_s = float(np.median(timed))
        sps = args.batch_size / step_s
        result.update(
            mode="steps",
            timed_steps=len(timed),
            setup_seconds=round(stamps[0] - t, 1),
            step_seconds_median=round(step_s, 4),
            step_seconds_mean=round(float(np.mean(timed)), 4),
            samples_per_second=round(sps, 1),
            projected_epoch_seconds=round(n_train / sps, 1),
            projected_200_epochs_hours=round(200 * n_train / sps / 3600, 2),
        )
    return result


def _suggest_pairs(n: int, dim: int):
    """``n`` synthetic query / caption / image-vector pairs over whole vocabulary words (seeded)."""
    from pyterrier_d2s.suggest.trainer import SuggestPairs

    vocab = Vocabulary()
    words = [t for t, sp in zip(vocab.tokens, vocab.special_mask, strict=True) if not sp and t.isalpha()]
    rng = np.random.default_rng(0)

    def texts() -> list[str]:
        return [" ".join(rng.choice(words, size=12)) for _ in range(n)]

    return SuggestPairs(texts(), texts(), rng.normal(size=(n, dim)).astype(np.float32))


def _run_suggest(args: argparse.Namespace) -> dict:
    """The steps timing of :class:`BiEncoderTrainer` (``--trainer suggest``); rank 0's under ``--nproc``."""
    from pyterrier_d2s.suggest.model import SuggestBiEncoder, SuggestConfig
    from pyterrier_d2s.suggest.trainer import BiEncoderTrainConfig, BiEncoderTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = _suggest_pairs(args.images, args.dim)
    torch.manual_seed(0)  # every rank builds the same model
    model = SuggestBiEncoder(SuggestConfig.for_preset(args.preset, image_dim=args.dim, max_length=32))
    stamps: list[float] = []
    sent: list[int] = []

    def clock(event: str, info: dict) -> None:
        if event == "step":
            stamps.append(time.perf_counter())
            sent.append(trainer.dist.bytes_sent)
            if len(stamps) > args.warmup_steps + args.steps:
                raise _Stop

    config = BiEncoderTrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    trainer = BiEncoderTrainer(config, device=args.device, callbacks=[clock], progress=False)
    t = time.perf_counter()
    try:
        trainer.fit(model, pairs)
    except _Stop:
        pass
    timed = np.diff(stamps[args.warmup_steps :])
    step_s = float(np.median(timed))
    return {
        "benchmark": "train_speed",
        "trainer": "suggest",
        "preset": args.preset,
        "threads": torch.get_num_threads(),
        "pairs": args.images,
        "batch_size": args.batch_size,
        "world_size": trainer.dist.world,
        "bytes_per_step": int(np.median(np.diff(sent[args.warmup_steps :]))),
        "timed_steps": len(timed),
        "setup_seconds": round(stamps[0] - t, 1),
        "step_seconds_median": round(step_s, 4),
        "samples_per_second": round(args.batch_size / step_s, 1),
    }


if __name__ == "__main__":
    main()
