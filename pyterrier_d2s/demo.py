"""``d2s demo``: the whole data path on the embedded COCO-500 set, offline, in well under a minute on a CPU.

:func:`run_demo` trains a head on the set's 400 training images, and (the paper's Table 6 pairing) an exp=0
head whose index is the rescorer's first stage; indexes the 50 test images with both; compares dense, sparse,
no-expansion and rescored retrieval over them; and shows the top terms of the first test captions.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]

DEMO_DATA = "coco500"


def run_demo(
    out: str | os.PathLike = "runs/demo",
    exp: str = "c+w",
    eta: float = 1e-3,
    seed: int = 42,
    epochs: int | None = None,
    noexp_epochs: int | None = None,
    echo: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict:
    """Train, index, evaluate and explain on coco500 under ``out``; the reports of every stage.

    ``epochs`` / ``noexp_epochs``: of the main and the exp=0 head (``None``: from the recipe;
    ``noexp_epochs=0``: no exp=0 head, the first stage is then the main head's own-term weights). ``echo``
    receives each stage's heading, report (as JSON), table and terms as they are done (default: printed and
    flushed); ``notify`` the notes of training and evaluation (default: logged as warnings). Returns ``train``,
    ``train_noexp``, ``index``, ``index_noexp`` (without ``noexp_epochs=0``), ``evaluate`` (the rows of
    :func:`~pyterrier_d2s.index_evaluation.comparison_records`), ``terms`` (of
    :func:`~pyterrier_d2s.explain.explain_rows`) and ``seconds``.
    """
    from .index_evaluation import comparison_records, evaluate_index, format_comparison

    if noexp_epochs is not None and noexp_epochs < 0:
        raise ValueError(f"--noexp-epochs must be >= 0, not {noexp_epochs}")
    started = time.perf_counter()
    out = Path(out)
    paired = noexp_epochs != 0
    stages = _Stages(echo or _print_flushed, 5 if paired else 4)
    report = _train_and_index(out, exp, eta, seed, (epochs, noexp_epochs), paired, stages, notify)
    noexp = {}
    if paired:
        noexp = {"noexp_model": str(out / "head-noexp"), "noexp_index": str(out / "index-noexp")}
    stages.next("dense vs sparse vs no expansion vs no expansion >> expansion")
    table = evaluate_index(str(out / "head"), str(out / "index"), DEMO_DATA, notify=notify, **noexp)
    stages.echo(format_comparison(table))
    report["evaluate"] = comparison_records(table)
    stages.next("top-10 terms of captions and their images (* = in the caption), cf. the paper's Table 4")
    report["terms"] = _explained(out / "head", stages.echo)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


class _Stages:
    """The demo's numbered stage headings (``== 2/5 ...``) and reports, through ``echo``."""

    def __init__(self, echo: Callable[[str], None], total: int):
        self.echo, self.total, self.done = echo, total, 0

    def next(self, heading: str) -> None:
        self.done += 1
        self.echo(f"== {self.done}/{self.total} {heading}")

    def reported(self, report: dict) -> dict:
        self.echo(json.dumps(report))
        return report


def _train_and_index(
    out: Path,
    exp: str,
    eta: float,
    seed: int,
    epochs: tuple[int | None, int | None],
    paired: bool,
    stages: _Stages,
    notify: Callable[[str], None] | None,
) -> dict:
    """The first stages: the head (and with ``paired`` the exp=0 head) trained, with ``epochs`` (of the head,
    of the exp=0 head), and their indexes of the test images built."""
    from .indexing import index_images
    from .training import TrainConfig
    from .training_run import train_head

    def train(head_exp: str, head_epochs: int | None, head_dir: Path) -> dict:
        config = TrainConfig(exp=head_exp, eta=eta, seed=seed, epochs=head_epochs)
        return stages.reported(train_head(DEMO_DATA, str(head_dir), config, notify=notify))

    def index(head: str, index_dir: str) -> dict:
        return stages.reported(index_images(str(out / head), DEMO_DATA, str(out / index_dir), overwrite=True))

    stages.next(f"training a D2S head on the 400 training images of {DEMO_DATA} (CLIP ViT-B/16)")
    report = {"train": train(exp, epochs[0], out / "head")}
    if paired:
        # the paper's Table 6 pairing: an exp=0 head's index is the rescorer's first stage (a c+w head's own
        # terms carry ~2 % of its query weight on this small set, too little to find the candidates)
        stages.next("training an exp=0 head (the captions' own terms) for the first stage")
        report["train_noexp"] = train("0", epochs[1], out / "head-noexp")
    stages.next("indexing the 50 test images (forward store; engines build on first use)")
    report["index"] = index("head", "index")
    if paired:
        report["index_noexp"] = index("head-noexp", "index-noexp")
    return report


def _print_flushed(text: str) -> None:
    print(text, flush=True)


def _explained(head_dir: Path, echo: Callable[[str], None]) -> list[dict]:
    """Top-10 terms of the first test captions of the head in ``head_dir`` and their images, echoed."""
    from .data import load_pairs, split_for_head
    from .explain import EXPLAINED_CAPTIONS, explain_rows, format_explained, test_caption_rows
    from .model import D2S

    model = D2S.from_pretrained(head_dir)
    data = split_for_head(load_pairs(DEMO_DATA), head_dir)
    terms = explain_rows(model, data, test_caption_rows(data, EXPLAINED_CAPTIONS))
    echo(format_explained(terms))
    return terms
