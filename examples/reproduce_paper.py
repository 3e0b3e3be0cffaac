"""Reproduce the D2S paper: MSCOCO (5k test) and Flickr30k (1k test) with BLIP and ALBEF (Tables 1-5).

For every data set × dense model this runs the whole recipe with ``d2s`` subcommands (in this process; each
is echoed on stderr as the command that runs it alone):
``d2s train`` (200 epochs, batch 512: the published setting; one head per η and expansion mode),
``d2s index`` (PISA + forward store over the test images) and ``d2s evaluate`` (dense vs expanded vs
own-terms vs own-terms >> expansion re-scoring), then prints the user's numbers next to the paper's:
one table per data set × model, plus the Table-4 style top terms of three captions and their images.
Every step writes into ``--out``, and ``d2s train`` resumes from its checkpoint, so an interrupted run
continues where it stopped when started again with the same arguments.

Where the dense vectors come from (one directory per data set × model under ``--vectors``, named
``mscoco-blip-dense``, ``flickr30k-albef-dense``, ...):

(a) the authors' release. The paper's repository (github.com/thongnt99/lsr-multimodal) lists the
    precomputed vectors as Hugging Face data sets ``lsr42/mscoco-blip-dense``, ``lsr42/flickr30k-blip-dense``,
    ``lsr42/mscoco-albef-dense`` and ``lsr42/flickr30k-albef-dense``, each with ``img_embs.parquet``,
    ``text_embs.parquet`` (``id``, ``emb``) and the Karpathy-split ``dataset_meta.json``. ``--download``
    fetches them with ``huggingface_hub`` (installed with transformers); reading parquet needs pyarrow
    (``pip install "pyterrier-d2s[parquet]"``)::

        python examples/reproduce_paper.py --vectors data --download            # all four, GPU: ~2 h a head

(b) images, through the dense encoders (``d2s encode``): the MSCOCO 2014 / Flickr30k images and a Karpathy
    split file (``dataset_coco.json`` / ``dataset_flickr30k.json``, or the ``dataset_meta.json`` of the
    authors' release). ALBEF exists only through LAVIS (``lavis:albef_retrieval/coco``, ``.../flickr``);
    BLIP through LAVIS (``lavis:blip_retrieval/coco``, the paper's checkpoints, the default) or transformers
    (``Salesforce/blip-itm-base-coco`` / ``-flickr``, ``--blip-encoder transformers``). LAVIS lives in its
    own environment (it pins transformers 4.26): ``--encode-python`` names that environment's python, which
    runs ``examples/lavis_encode.py`` (LAVIS only, no pyterrier-d2s there); the transformers encoders run
    ``d2s encode`` with it (default: this python).
    Image files are the split file's ``filepath/filename`` below the ``--images`` directory (for MSCOCO, a
    directory holding ``train2014/`` and ``val2014/``)::

        python examples/reproduce_paper.py --vectors vectors --encode \\
            --images mscoco=coco2014 --captions mscoco=dataset_coco.json \\
            --images flickr30k=flickr30k-images --captions flickr30k=dataset_flickr30k.json \\
            --encode-python ~/lavis-env/bin/python

(c) no training: ``--checkpoint lsr42/d2s_mscoco-blip-dense_q_reg_0.001_d_reg_0.001`` (the authors' trained
    heads on the Hugging Face Hub, or a local directory of one) converts their head (``D2S.from_pretrained``),
    indexes their vectors' test images and evaluates it (``d2s index``, ``d2s evaluate``), the paper's Table 1
    numbers beside (MSCOCO 5k, BLIP, η = 1e-3: R@1 51.8 at FLOPs 11.5; Flickr30k 1k: 77.1). The data set,
    dense model and η come from the checkpoint's name (``d2s_<dataset>-<model>-dense_q_reg_<η>_d_reg_<η>``),
    else from ``--datasets``, ``--models`` and ``--etas`` (one each)::

        python examples/reproduce_paper.py --vectors data --download \
            --checkpoint lsr42/d2s_mscoco-blip-dense_q_reg_0.001_d_reg_0.001

``--demo`` runs the same pipeline on the embedded COCO-500 set (500 CLIP ViT-B/16 pairs; its fixed split:
trained on 400 images, evaluated on 50 held-out ones) on a CPU: one head (η = 1e-3) with ``d2s train``'s
coco500 recipe (40 epochs, about 3 minutes on 2 cores), or ``--epochs 2`` for a smoke test (about a minute). Its numbers are not
comparable to the paper's, which are printed beside them only to show where a real run's numbers go.

Prints progress and the commands it runs on stderr, the tables on stdout, and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import paper_numbers as paper
from steps import StepError, d2s

PAPER_EPOCHS, PAPER_BATCH = 200, 512  # Section 5.1: "a batch size of 512 for 200 epochs"
AUTHORS_FILES = ("img_embs.parquet", "text_embs.parquet", "dataset_meta.json")
VECTOR_FILES = ("images.jsonl", "image_vectors.npy", "captions.jsonl", "caption_vectors.npy")

# Dense encoders of d2s encode per (data set, model); the paper's vectors come from LAVIS checkpoints.
ENCODERS: dict[tuple[str, str], dict[str, str]] = {
    ("mscoco", "blip"): {
        "lavis": "lavis:blip_retrieval/coco",
        "transformers": "Salesforce/blip-itm-base-coco",
    },
    ("flickr30k", "blip"): {
        "lavis": "lavis:blip_retrieval/flickr",
        "transformers": "Salesforce/blip-itm-base-flickr",
    },
    ("mscoco", "albef"): {"lavis": "lavis:albef_retrieval/coco"},
    ("flickr30k", "albef"): {"lavis": "lavis:albef_retrieval/flickr"},
}


def run_encoder(argv: list[str], python: str, quiet: bool) -> None:
    """``PYTHON ARGV`` (``d2s encode`` or ``lavis_encode.py``) with the interpreter of the environment that has
    the dense model's toolkit."""
    print(f"$ {python} " + shlex.join(argv), file=sys.stderr, flush=True)
    proc = subprocess.run([python, *argv], stdout=subprocess.DEVNULL if quiet else None)
    if proc.returncode != 0:
        raise StepError(f"{shlex.join(argv)} failed (exit status {proc.returncode}); its error is above")


def vectors_ready(directory: Path) -> bool:
    """True when ``directory`` holds the authors' files or a finished vectors directory."""
    return all((directory / f).is_file() for f in AUTHORS_FILES) or all(
        (directory / f).is_file() for f in VECTOR_FILES
    )


def download(dataset: str, model: str, dest: Path) -> None:
    """Fetch the authors' vectors of one data set × model (Hugging Face data set ``lsr42/<name>``)."""
    from huggingface_hub import snapshot_download

    repo = f"lsr42/{dataset}-{model}-dense"
    print(f"== downloading {repo} into {dest}", file=sys.stderr, flush=True)
    snapshot_download(
        repo_id=repo, repo_type="dataset", local_dir=str(dest), allow_patterns=list(AUTHORS_FILES)
    )


def prepare_vectors(dataset: str, model: str, args: argparse.Namespace) -> str:
    """The ``--data`` argument of the d2s steps for one data set × model, fetching or encoding as asked."""
    dest = Path(args.vectors) / f"{dataset}-{model}-dense"
    if vectors_ready(dest):
        return str(dest)
    if args.download:
        download(dataset, model, dest)
    elif args.encode:
        if dataset not in args.images or dataset not in args.captions:
            raise StepError(f"--encode needs --images {dataset}=DIR and --captions {dataset}=FILE")
        backend = "lavis" if model == "albef" else args.blip_encoder
        encoder = ENCODERS[(dataset, model)][backend]
        common = ["--images", args.images[dataset], "--captions", args.captions[dataset], "--out", str(dest)]
        common += ["--batch-size", str(args.encode_batch_size)]
        if backend == "lavis":  # LAVIS's own environment, without pyterrier-d2s: examples/lavis_encode.py
            script = str(Path(__file__).with_name("lavis_encode.py"))
            run_encoder(
                [script, "--model", encoder.removeprefix("lavis:"), *common], args.encode_python, args.quiet
            )
        else:
            argv = ["-m", "pyterrier_d2s.cli", "encode", "--encoder", encoder, *common]
            run_encoder(argv + (["--quiet"] if args.quiet else []), args.encode_python, args.quiet)
    if not vectors_ready(dest):
        raise StepError(
            f"no vectors at {dest}: use --download (the authors' release), --encode (from images), or put "
            f"the authors' {', '.join(AUTHORS_FILES)} or a d2s encode output there"
        )
    return str(dest)


def train_evaluate(
    data: str, head_dir: Path, exp: str, eta: float, args: argparse.Namespace, evaluate: bool
) -> dict:
    """``d2s train`` (+ ``d2s index`` and ``d2s evaluate``) for one head; the train report with ``evaluate``."""
    argv = ["train", "--data", data, "--exp", exp, "--eta", repr(eta), "--out", str(head_dir)]
    if args.epochs is not None:
        argv += ["--epochs", str(args.epochs)]
    if not args.demo:  # the published MSCOCO/Flickr30k setting; the demo set gets the data-derived recipe
        argv += ["--recipe", "paper", "--batch-size", str(PAPER_BATCH)]
    report, _ = d2s(*argv, *(["--quiet"] if args.quiet else []))
    report["evaluate"] = None
    if evaluate:
        index_dir = head_dir.with_name(head_dir.name + ".index")
        d2s("index", "--model", str(head_dir), "--data", data, "--out", str(index_dir), "--overwrite")
        report["evaluate"], table = d2s(
            "evaluate", "--model", str(head_dir), "--index", str(index_dir), "--data", data
        )
        print(table, file=sys.stderr, flush=True)
    return report


CHECKPOINT_NAME = re.compile(
    r"d2s_(?P<dataset>mscoco|flickr30k)-(?P<model>blip|albef)-dense_q_reg_(?P<eta>[0-9.e-]+)_d_reg_[0-9.e-]+$"
)


def checkpoint_target(checkpoint: str, args: argparse.Namespace) -> tuple[str, str, float]:
    """(data set, dense model, η) of an authors' checkpoint: from its name, else the one asked on the command line."""
    m = CHECKPOINT_NAME.search(checkpoint.rstrip("/"))
    if m:
        return m["dataset"], m["model"], float(m["eta"])
    if len(args.datasets) != 1 or len(args.models) != 1 or len(args.etas) != 1:
        raise StepError(
            f"{checkpoint}: not named d2s_<dataset>-<model>-dense_q_reg_<eta>_d_reg_<eta>; "
            "give one --datasets, one --models and one --etas"
        )
    return args.datasets[0], args.models[0], args.etas[0]


def checkpoint_evaluate(checkpoint: str, data: str, head_dir: Path, eta: float) -> dict:
    """The authors' trained head ``checkpoint`` (Hub id or directory), converted into ``head_dir``, indexed
    over ``data``'s test images and evaluated (``d2s index``, ``d2s evaluate``): a report like a train's."""
    from pyterrier_d2s.model import D2S

    print(f"== converting {checkpoint} into {head_dir}", file=sys.stderr, flush=True)
    try:
        D2S.from_pretrained(checkpoint).save_pretrained(head_dir)
    except (FileNotFoundError, ValueError) as e:
        raise StepError(f"--checkpoint {checkpoint}: {e}") from e
    index_dir = head_dir.with_name(head_dir.name + ".index")
    d2s("index", "--model", str(head_dir), "--data", data, "--out", str(index_dir), "--overwrite")
    systems, table = d2s("evaluate", "--model", str(head_dir), "--index", str(index_dir), "--data", data)
    print(table, file=sys.stderr, flush=True)
    expanded = next(s for s in systems if s["name"] == "d2s-expanded")
    return {
        "checkpoint": checkpoint,
        "exp": "c+w",  # the paper's method (Table 1); the checkpoint does not record its mode
        "eta": eta,
        "sparse_r1": expanded["R@1"],
        "sparse_r5": expanded["R@5"],
        "sparse_mrr10": expanded["RR@10"],
        "flops": expanded["flops"],
        "exact20": None,
        "semantic20": None,
        "evaluate": systems,
        "out": str(head_dir),
    }


def pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def print_tables(run: dict, demo: bool) -> None:
    """One data set × model: the head table (Tables 1-3) and the PyTerrier pipelines (Table 5's ρ)."""
    ref = paper.paper_key(run["paper_ref"])
    title = f"{run['dataset']} × {run['model']}"
    if demo:
        title += f" (demo; paper columns: {paper.LABELS[ref[0]]}, {paper.LABELS[ref[1]]}; not comparable)"
    print(f"\n## {title}: dense vs D2S heads (paper Tables 1-3; measures in %)\n")
    print(
        "| system | exp | η | R@1 | R@5 | MRR@10 | FLOPs | Exact@20 | Sem@20 "
        "| paper R@1 / R@5 / MRR@10 / FLOPs | paper Exact@20 / Sem@20 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    d = run["dense"]
    print(
        f"| dense | – | – | {pct(d['R@1'])} | {pct(d['R@5'])} | {pct(d['RR@10'])} | – | – | – "
        f"| {paper.fmt(paper.DENSE.get(ref))} / – (Table 1) | – |"
    )
    for h in run["heads"]:
        sparse = paper.SPARSE.get((*ref, h["exp"], h["eta"]))  # Tables 1-2
        semantic = paper.SEMANTIC.get((*ref, h["exp"], h["eta"]))  # Table 3
        print(
            f"| D2S | {h['exp']} | {h['eta']:g} | {pct(h['sparse_r1'])} | {pct(h['sparse_r5'])} | "
            f"{pct(h['sparse_mrr10'])} | {h['flops']:.1f} | {pct(h['exact20'])} | {pct(h['semantic20'])} | "
            f"{paper.fmt(sparse)} | {paper.fmt(semantic)} |"
        )
    evaluated = [h for h in run["heads"] if h["evaluate"]]
    if not evaluated:
        return
    print(f"\n## {title}: PyTerrier pipelines over the PISA index (d2s evaluate; ρ with dense: Table 5)\n")
    print(
        "| exp | η | system | R@1 | R@5 | MRR@10 | FLOPs | ms/query | overlap@10 | ρ R@1 / R@5 / MRR@10 | paper ρ |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for h in evaluated:
        for s in h["evaluate"]:
            rho = " / ".join(pct(s.get(f"rho-{m}")) for m in ("R@1", "R@5", "RR@10"))
            paper_rho = paper.fmt(h["paper"]["rho"]) if s["name"] == "d2s-expanded" else "–"  # Table 5
            flops = "–" if s["flops"] is None else f"{s['flops']:.1f}"
            print(
                f"| {h['exp']} | {h['eta']:g} | {s['name']} | {pct(s['R@1'])} | {pct(s['R@5'])} | "
                f"{pct(s['RR@10'])} | {flops} | {s['ms_per_query']:.2f} | {pct(s.get('overlap@10'))} | "
                f"{rho} | {paper_rho} |"
            )


def table4_rows(pairs, n: int = 3) -> list[tuple[int, str | None]]:
    """Rows of ``pairs`` to explain: Table 4's captions where the data has them, then test captions."""
    import numpy as np

    wanted = {paper.normalise_caption(c): c for c in paper.TOP_TERMS}
    rows: list[tuple[int, str | None]] = []
    for r, text in enumerate(pairs.caption_texts):
        caption = wanted.pop(paper.normalise_caption(text), None)
        if caption is not None:
            rows.append((r, caption))
    if pairs.image_split is None:
        test_rows = np.arange(len(pairs))
    else:
        test_rows = np.flatnonzero(pairs.image_split[pairs.caption_image] == "test")
    taken = {r for r, _ in rows}
    rows += [(int(r), None) for r in test_rows if int(r) not in taken][: max(0, n - len(rows))]
    return rows[:n]


def marked(terms: list[str], own: set[str]) -> str:
    """Terms joined by spaces, ``*`` after those that occur in the caption."""
    return " ".join(t + ("*" if t in own else "") for t in terms)


def explain(run: dict, n: int = 3) -> dict:
    """Table-4 style top-10 terms of ``n`` captions and their images, from one head of ``run``."""
    from pyterrier_d2s.data import load_pairs, split_for_head
    from pyterrier_d2s.explain import explain_rows
    from pyterrier_d2s.model import D2S

    heads = {(h["exp"], h["eta"]): h for h in run["heads"]}
    head = heads.get(("c", 1e-3)) or heads.get(("c+w", 1e-3)) or run["heads"][0]  # Table 4 uses exp=c, η=1e-3
    pairs = split_for_head(load_pairs(run["data"]), head["out"])  # the head's test captions (its split.json)
    rows = table4_rows(pairs, n)
    items = explain_rows(D2S.from_pretrained(head["out"]), pairs, [r for r, _ in rows], k=10)
    print(
        f"\n## Top-10 terms of captions and their images (cf. paper Table 4): {run['dataset']} × {run['model']}, "
        f"exp={head['exp']}, η={head['eta']:g}; * = in the caption\n"
    )
    for item, (_, caption) in zip(items, rows, strict=True):
        own = set(item["own_terms"])
        print(f"{item['caption']}  (caption {item['caption_id']}, image {item['image_id']})")
        print(f"  caption: {marked(item['caption_terms'], own)}")
        print(f"  image:   {marked(item['image_terms'], own)}")
        item["paper"] = None
        if caption is not None:  # one of Table 4's captions: the paper's terms (BLIP, η = 1e-3) beneath
            terms = paper.TOP_TERMS[caption]
            item["paper"] = {f"{exp}/{kind}": list(t) for (exp, kind), t in terms.items()}
            for exp in ("c", "1"):
                print(f"  paper exp={exp}, caption: {' '.join(terms[(exp, 'caption')])}")
                print(f"  paper exp={exp}, image:   {' '.join(terms[(exp, 'image')])}")
    return {"dataset": run["dataset"], "model": run["model"], "head": head["out"], "items": items}


def parse_assignments(values: list[str], flag: str) -> dict[str, str]:
    """``["mscoco=DIR", ...]`` -> ``{"mscoco": "DIR"}``."""
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or key not in paper.DATASETS:
            raise SystemExit(f"{flag} takes DATASET=PATH with DATASET in {paper.DATASETS}, not {v!r}")
        out[key] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", action="store_true", help="the embedded COCO-500 set (CPU, minutes)")
    ap.add_argument(
        "--vectors", default="vectors", help="directory with one <dataset>-<model>-dense dir each"
    )
    ap.add_argument(
        "--download", action="store_true", help="fetch the authors' vectors (Hugging Face lsr42/...)"
    )
    ap.add_argument("--encode", action="store_true", help="encode images with d2s encode")
    ap.add_argument("--images", action="append", default=[], help="DATASET=DIR of images (with --encode)")
    ap.add_argument("--captions", action="append", default=[], help="DATASET=Karpathy json (with --encode)")
    ap.add_argument("--blip-encoder", choices=["lavis", "transformers"], default="lavis")
    ap.add_argument(
        "--encode-python", default=sys.executable, help="python of the LAVIS env (lavis_encode.py)"
    )
    ap.add_argument("--encode-batch-size", type=int, default=64)
    ap.add_argument("--datasets", nargs="+", choices=paper.DATASETS, default=list(paper.DATASETS))
    ap.add_argument("--models", nargs="+", choices=paper.MODELS, default=list(paper.MODELS))
    ap.add_argument(
        "--etas",
        nargs="+",
        type=float,
        default=None,
        help="η values (default: Table 1's 1e-3 1e-5; demo: 1e-3)",
    )
    ap.add_argument(
        "--modes",
        nargs="+",
        choices=["0", "1", "c", "c+w"],
        default=["c+w"],
        help="expansion modes; c+w is the paper's method (Table 1), 0 1 c c+w give Tables 2-3",
    )
    ap.add_argument(
        "--evaluate-modes",
        nargs="*",
        choices=["0", "1", "c", "c+w"],
        default=["c+w"],
        help="modes whose heads are also indexed and evaluated as PyTerrier pipelines",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"default {PAPER_EPOCHS} (demo: d2s train's coco500 recipe, 40; --epochs 2 for a smoke test)",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="an authors' trained head (Hub id lsr42/d2s_..., or a directory): evaluate it, no training",
    )
    ap.add_argument("--out", default=None, help="runs directory (default runs/paper, runs/paper-demo)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    args.images = parse_assignments(args.images, "--images")
    args.captions = parse_assignments(args.captions, "--captions")
    if args.epochs is None and not args.demo:
        args.epochs = PAPER_EPOCHS
    if args.etas is None:
        args.etas = [1e-3] if args.demo else [1e-3, 1e-5]
    out = Path(args.out or ("runs/paper-demo" if args.demo else "runs/paper"))

    from pyterrier_d2s.data import ensure_split, load_pairs
    from pyterrier_d2s.evaluation import dense_metrics

    started = time.perf_counter()
    combos = [("coco500", "clip")] if args.demo else [(d, m) for d in args.datasets for m in args.models]
    runs = []
    try:
        if args.checkpoint:
            dataset, model, eta = checkpoint_target(args.checkpoint, args)
            combos, args.etas = [(dataset, model)], [eta]
        for dataset, model in combos:
            ref = ("mscoco", "blip") if args.demo else (dataset, model)
            print(f"== {dataset} × {model}", file=sys.stderr, flush=True)
            data = "coco500" if args.demo else prepare_vectors(dataset, model, args)
            run = {"dataset": dataset, "model": model, "data": data, "paper_ref": "-".join(ref), "heads": []}
            # on the test images d2s train reports on: the data's own split, else its default seeded split
            run["dense"] = dense_metrics(ensure_split(load_pairs(data)).evaluation_split())
            if args.checkpoint:
                name = Path(args.checkpoint.rstrip("/")).name
                report = checkpoint_evaluate(args.checkpoint, data, out / f"{dataset}-{model}" / name, eta)
                report["paper"] = paper.expected(*ref, "c+w", eta)
                run["heads"].append(report)
            for eta in [] if args.checkpoint else args.etas:
                for exp in args.modes:
                    head_dir = out / f"{dataset}-{model}" / f"exp{exp}-eta{eta:g}"
                    report = train_evaluate(
                        data, head_dir, exp, eta, args, evaluate=exp in args.evaluate_modes
                    )
                    report["paper"] = paper.expected(*ref, exp, eta)
                    run["heads"].append(report)
            runs.append(run)
    except StepError as e:
        raise SystemExit(str(e)) from None

    for run in runs:
        print_tables(run, args.demo)
    first = next((r for r in runs if r["dataset"] in ("mscoco", "coco500")), runs[0])
    terms = explain(first)
    summary = {
        "demo": args.demo,
        "runs": runs,
        "terms": terms,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
