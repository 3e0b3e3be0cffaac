"""The numbers the D2S paper reports, for the examples to print next to the user's own.

Source: Nguyen, Hendriksen, Yates, de Rijke, "Multimodal Learned Sparse Retrieval with Probabilistic Expansion
Control", ECIR 2024 (arXiv 2402.17535), Tables 1-5 and Section 5.2. Values are copied as printed there
(percentages for R@k, MRR@10, Exact@20, Semantic@20 and ρ; FLOPs as in Eq. 1). Keys use the data set names
``mscoco`` (Karpathy 5k test images) and ``flickr30k`` (1k test images), the dense models ``blip`` and
``albef``, the expansion modes of ``d2s train --exp`` (``0``, ``1``, ``c``, ``c+w``) and η as a float.

Imported by the scripts beside it (``python examples/<script>.py`` puts this directory on ``sys.path``).
"""

from __future__ import annotations

DATASETS = ("mscoco", "flickr30k")
MODELS = ("blip", "albef")
LABELS = {"mscoco": "MSCOCO 5k", "flickr30k": "Flickr30k 1k", "blip": "BLIP", "albef": "ALBEF"}

# Table 1, "T2I Dense Retrieval": the frozen dense models. (dataset, model) -> (R@1, R@5, MRR@10)
DENSE: dict[tuple[str, str], tuple[float, float, float]] = {
    ("mscoco", "albef"): (53.1, 79.3, 64.3),
    ("mscoco", "blip"): (57.3, 81.8, 67.8),
    ("flickr30k", "albef"): (79.1, 94.9, 86.6),
    ("flickr30k", "blip"): (83.2, 96.7, 89.3),
}

# Table 2 (its exp = c+w rows are Table 1's D2S rows, identical there), plus the η = 1e-2 BLIP model on MSCOCO
# that Section 5.2 (RQ1) quotes in the text (R@5 not given).
# (dataset, model, exp, η) -> (R@1, R@5, MRR@10, FLOPs)
SPARSE: dict[tuple[str, str, str, float], tuple[float | None, float | None, float | None, float | None]] = {
    # MSCOCO (5k), BLIP
    ("mscoco", "blip", "0", 1e-3): (45.5, 73.0, 57.3, 2.8),
    ("mscoco", "blip", "1", 1e-3): (53.4, 80.0, 64.6, 49.1),
    ("mscoco", "blip", "c", 1e-3): (51.9, 79.0, 63.4, 11.8),
    ("mscoco", "blip", "c+w", 1e-3): (51.8, 79.3, 63.4, 11.5),
    ("mscoco", "blip", "0", 1e-5): (47.2, 74.4, 58.8, 3.2),
    ("mscoco", "blip", "1", 1e-5): (55.9, 81.3, 66.8, 343.0),
    ("mscoco", "blip", "c", 1e-5): (54.7, 80.5, 65.8, 79.1),
    ("mscoco", "blip", "c+w", 1e-5): (54.5, 80.6, 65.6, 78.4),
    ("mscoco", "blip", "c+w", 1e-2): (47.2, None, 58.5, 1.6),  # Section 5.2, RQ1
    # Flickr30k (1k), BLIP
    ("flickr30k", "blip", "0", 1e-3): (68.9, 89.5, 77.8, 3.0),
    ("flickr30k", "blip", "1", 1e-3): (79.5, 95.5, 86.4, 50.3),
    ("flickr30k", "blip", "c", 1e-3): (77.3, 94.7, 84.8, 13.6),
    ("flickr30k", "blip", "c+w", 1e-3): (77.1, 94.6, 84.6, 9.9),
    ("flickr30k", "blip", "0", 1e-5): (72.3, 91.8, 80.7, 3.5),
    ("flickr30k", "blip", "1", 1e-5): (81.4, 96.0, 87.7, 213.0),
    ("flickr30k", "blip", "c", 1e-5): (79.9, 95.5, 86.7, 40.1),
    ("flickr30k", "blip", "c+w", 1e-5): (79.8, 95.9, 86.7, 39.5),
    # MSCOCO (5k), ALBEF
    ("mscoco", "albef", "0", 1e-3): (43.8, 71.8, 55.7, 2.5),
    ("mscoco", "albef", "1", 1e-3): (50.9, 78.4, 62.5, 68.2),
    ("mscoco", "albef", "c", 1e-3): (49.7, 77.7, 61.5, 38.3),
    ("mscoco", "albef", "c+w", 1e-3): (49.6, 77.7, 61.4, 18.7),
    # MRR@10 = 83.0 is printed so in Table 2; with R@1 45.9 and R@5 73.9 it cannot be right (MRR@10 lies
    # between R@1 and R@5), most likely a typo. Kept as printed.
    ("mscoco", "albef", "0", 1e-5): (45.9, 73.9, 83.0, 3.4),
    ("mscoco", "albef", "1", 1e-5): (52.4, 78.7, 63.7, 283.0),
    ("mscoco", "albef", "c", 1e-5): (51.2, 78.3, 62.8, 77.9),
    ("mscoco", "albef", "c+w", 1e-5): (50.7, 78.2, 62.4, 74.2),
    # Flickr30k (1k), ALBEF
    ("flickr30k", "albef", "0", 1e-3): (65.8, 88.3, 75.4, 3.0),
    ("flickr30k", "albef", "1", 1e-3): (75.7, 94.2, 83.8, 61.9),
    ("flickr30k", "albef", "c", 1e-3): (74.6, 93.7, 82.8, 17.9),
    ("flickr30k", "albef", "c+w", 1e-3): (74.2, 93.8, 82.6, 21.7),
    ("flickr30k", "albef", "0", 1e-5): (68.1, 90.0, 77.6, 3.2),
    ("flickr30k", "albef", "1", 1e-5): (77.2, 94.6, 84.8, 210.0),
    ("flickr30k", "albef", "c", 1e-5): (76.4, 94.8, 84.0, 71.7),
    ("flickr30k", "albef", "c+w", 1e-5): (75.4, 94.3, 83.6, 64.3),
}

# Table 3, semantic deviation (exp = c and exp = 1 only). (dataset, model, exp, η) -> (Exact@20, Semantic@20)
SEMANTIC: dict[tuple[str, str, str, float], tuple[float, float]] = {
    ("mscoco", "blip", "c", 1e-5): (20.0, 60.1),
    ("mscoco", "blip", "1", 1e-5): (6.9, 48.5),
    ("mscoco", "blip", "c", 1e-3): (25.0, 63.2),
    ("mscoco", "blip", "1", 1e-3): (2.5, 42.0),
    ("mscoco", "albef", "c", 1e-5): (20.5, 61.0),
    ("mscoco", "albef", "1", 1e-5): (5.6, 43.5),
    ("mscoco", "albef", "c", 1e-3): (15.1, 51.3),
    ("mscoco", "albef", "1", 1e-3): (1.6, 40.6),
    ("flickr30k", "blip", "c", 1e-5): (18.3, 58.0),
    ("flickr30k", "blip", "1", 1e-5): (3.2, 40.7),
    ("flickr30k", "blip", "c", 1e-3): (23.1, 60.6),
    ("flickr30k", "blip", "1", 1e-3): (2.2, 41.1),
    ("flickr30k", "albef", "c", 1e-5): (19.2, 59.8),
    ("flickr30k", "albef", "1", 1e-5): (1.2, 40.5),
    ("flickr30k", "albef", "c", 1e-3): (19.6, 56.4),
    ("flickr30k", "albef", "1", 1e-3): (1.3, 41.5),
}

# Table 5, per-query Pearson ρ (x100) between the dense model and D2S (the table gives no exp; these are the
# paper's own models, exp = c+w). (dataset, model, η) -> (ρ-R@1, ρ-R@5, ρ-MRR@10)
CORRELATION: dict[tuple[str, str, float], tuple[float, float, float]] = {
    ("mscoco", "blip", 1e-2): (61.0, 65.7, 72.3),
    ("mscoco", "blip", 1e-3): (74.0, 76.9, 83.8),
    ("mscoco", "blip", 1e-4): (79.7, 82.1, 88.2),
    ("mscoco", "blip", 1e-5): (81.2, 83.8, 89.2),
    ("mscoco", "albef", 1e-2): (64.4, 68.7, 75.5),
    ("mscoco", "albef", 1e-3): (73.1, 76.7, 83.5),
    ("mscoco", "albef", 1e-4): (78.1, 80.7, 87.2),
    ("mscoco", "albef", 1e-5): (78.2, 81.3, 87.3),
    ("flickr30k", "blip", 1e-2): (54.7, 55.0, 63.9),
    ("flickr30k", "blip", 1e-3): (66.2, 65.5, 73.6),
    ("flickr30k", "blip", 1e-4): (71.6, 72.8, 79.3),
    ("flickr30k", "blip", 1e-5): (74.3, 74.0, 81.1),
    ("flickr30k", "albef", 1e-2): (57.7, 57.0, 67.5),
    ("flickr30k", "albef", 1e-3): (68.8, 69.0, 77.2),
    ("flickr30k", "albef", 1e-4): (73.2, 74.6, 81.3),
    ("flickr30k", "albef", 1e-5): (74.2, 72.5, 82.0),
}

# Table 4: top-10 terms of three MSCOCO captions and their images, BLIP, η = 1e-3, for exp = c (the paper's
# controlled model) and exp = 1 (uncontrolled). caption -> {(exp, "caption" | "image"): terms}.
# The extracted paper text lists 13 terms for the first image under exp = c; they are kept as printed.
TOP_TERMS: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    "A man with a red helmet on a small moped on a dirt road": {
        ("c", "caption"): tuple("dirt mo motor motorcycle bike red riding features soldier ##oot".split()),
        ("c", "image"): tuple(
            "mountain mountains bike bee dirt mo red path ##oot person man riding bicycle".split()
        ),
        ("1", "caption"): tuple(', accent " yourself natural may while officer english ac'.split()),
        ("1", "image"): tuple('accent ship natural de crown yourself " ra now wild'.split()),
    },
    "A women smiling really big while holding a Wii remote.": {
        ("c", "caption"): tuple(
            "lady woman smile women remote laughing wii smiling video controller".split()
        ),
        ("c", "image"): tuple("smile after green woman smiling sweater remote lady wii her".split()),
        ("1", "caption"): tuple(", kai called forces rush lee war oil like ##h".split()),
        ("1", "image"): tuple("tall kai forces oil rush met war college thus there".split()),
    },
    "A couple of dogs sitting in the front seats of a car.": {
        ("c", "caption"): tuple("dogs dog car backseat seat couple vehicle sitting two puppy".split()),
        ("c", "image"): tuple("dog car dogs puppy out vehicle pup inside early open".split()),
        ("1", "caption"): tuple(", electric stood forest national master help arts fc -".split()),
        ("1", "image"): tuple("stood forest national electric master twice grant men para yet".split()),
    },
}


def normalise_caption(text: str) -> str:
    """Lower case, single spaces, no trailing full stop: how captions are matched against Table 4's."""
    return " ".join(text.lower().split()).rstrip(" .")


def paper_key(name: str) -> tuple[str, str]:
    """``"mscoco-blip"`` -> ``("mscoco", "blip")``; raises ``ValueError`` for a combination the paper lacks."""
    dataset, _, model = name.partition("-")
    if dataset not in DATASETS or model not in MODELS:
        known = ", ".join(f"{d}-{m}" for d in DATASETS for m in MODELS)
        raise ValueError(f"no paper numbers for {name!r}; known: {known}")
    return dataset, model


def expected(dataset: str, model: str, exp: str, eta: float) -> dict[str, float | tuple | None]:
    """The paper's numbers for one head, ``None`` where it gives none: ``R@1``, ``R@5``, ``MRR@10``, ``FLOPs``
    (Tables 1-2), ``Exact@20``, ``Semantic@20`` (Table 3) and ``rho`` (Table 5: ρ-R@1, ρ-R@5, ρ-MRR@10)."""
    sparse = SPARSE.get((dataset, model, exp, eta), (None,) * 4)
    semantic = SEMANTIC.get((dataset, model, exp, eta), (None, None))
    return {
        "R@1": sparse[0],
        "R@5": sparse[1],
        "MRR@10": sparse[2],
        "FLOPs": sparse[3],
        "Exact@20": semantic[0],
        "Semantic@20": semantic[1],
        "rho": CORRELATION.get((dataset, model, eta)) if exp == "c+w" else None,
    }


def fmt(values) -> str:
    """``"51.8 / 79.3 / –"``: paper values joined by slashes (one decimal, as printed), ``–`` where it gives none."""
    if values is None:
        return "–"
    return " / ".join("–" if v is None else f"{v:.1f}" for v in values)


def add_data_arguments(ap) -> None:
    """``--data``, ``--demo`` and ``--paper``, the options the sweep scripts share."""
    ap.add_argument(
        "--data", default=None, help="vectors directory or authors' dir (default with --demo: coco500)"
    )
    ap.add_argument("--demo", action="store_true", help="run on the embedded COCO-500 set")
    ap.add_argument(
        "--paper",
        default="mscoco-blip",
        help="whose paper numbers to print beside: mscoco|flickr30k - blip|albef (default mscoco-blip)",
    )


def data_and_reference(ap, args) -> tuple[str, tuple[str, str]]:
    """The data set to run on and the paper's (dataset, model) key, or an argparse error."""
    data = args.data or ("coco500" if args.demo else None)
    if data is None:
        ap.error("give --data or --demo")
    try:
        return data, paper_key(args.paper)
    except ValueError as e:
        ap.error(str(e))
