"""Encode images and captions with ALBEF or BLIP through LAVIS, in LAVIS's own environment, into a vectors
directory that pyterrier-d2s (in its own environment) trains, indexes and searches with.

Needs only ``salesforce-lavis`` (which brings torch, numpy and Pillow) and the standard library: no
pyterrier-d2s, so that LAVIS's pins (transformers 4.26, numpy < 2, ...) never meet this package's stack::

    python3 -m venv ~/lavis-env && ~/lavis-env/bin/pip install salesforce-lavis
    ~/lavis-env/bin/python examples/lavis_encode.py --model albef_retrieval/coco \\
        --captions dataset_coco.json --images coco2014 --out vectors/mscoco-albef-dense
    d2s train --data vectors/mscoco-albef-dense ...          # back in the pyterrier-d2s environment

``--captions`` is a Karpathy split file (``dataset_coco.json`` / ``dataset_flickr30k.json``: ``images`` with
``filepath``/``filename``, ``split``, ``sentences[].raw``); image files are ``filepath/filename`` below
``--images``. The vectors are the ITC features LAVIS's retrieval evaluation (``compute_sim_matrix``) uses: the
[CLS] output of the unimodal encoders through ``vision_proj`` / ``text_proj``, L2-normalised; captions go
through the model's ``eval`` text processor and are cut at 35 tokens, images through its ``eval`` image
processor (the same as ``pyterrier_d2s.encoders.LavisEncoder``). Output: ``images.jsonl`` (``image_id``,
``file``, ``split``), ``image_vectors.npy``, ``captions.jsonl`` (``caption_id``, ``image_id``, ``caption``),
``caption_vectors.npy`` (float32) and ``encoder.json``, written atomically at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

LAVIS_MODELS = {"blip_retrieval": ("coco", "flickr"), "albef_retrieval": ("coco", "flickr")}
MAX_LENGTH = 35  # LAVIS's compute_sim_matrix tokenises retrieval captions to 35 tokens


def read_karpathy(path: Path, images_dir: Path) -> tuple[list[dict], list[dict]]:
    """(image records, caption records) of a Karpathy split file; image records carry ``path``."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    images, captions = [], []
    for img in meta["images"]:
        image_id = str(img.get("cocoid", img.get("imgid", img.get("filename"))))
        rel = "/".join(p for p in (img.get("filepath", ""), img["filename"]) if p)
        images.append(
            {"image_id": image_id, "file": rel, "split": img.get("split", ""), "path": images_dir / rel}
        )
        for n, sentence in enumerate(img["sentences"]):
            cid = str(sentence.get("sentid", f"{image_id}-{n}"))
            captions.append({"caption_id": cid, "image_id": image_id, "caption": sentence["raw"]})
    return images, captions


@torch.no_grad()
def encode(model, vis, txt, images: list[dict], captions: list[dict], device: str, batch: int):
    """L2-normalised float32 (image vectors, caption vectors), in the order of ``images`` / ``captions``."""
    image_vecs, caption_vecs = [], []
    for start in range(0, len(images), batch):
        pixels = torch.stack(
            [vis(Image.open(r["path"]).convert("RGB")) for r in images[start : start + batch]]
        )
        feats = model.visual_encoder.forward_features(pixels.to(device))
        image_vecs.append(
            torch.nn.functional.normalize(model.vision_proj(feats[:, 0, :]).float(), dim=-1).cpu()
        )
    for start in range(0, len(captions), batch):
        texts = [txt(c["caption"]) for c in captions[start : start + batch]]
        tok = model.tokenizer(
            texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        ).to(device)
        out = model.text_encoder.forward_text(tok)
        caption_vecs.append(
            torch.nn.functional.normalize(
                model.text_proj(out.last_hidden_state[:, 0, :]).float(), dim=-1
            ).cpu()
        )
    return torch.cat(image_vecs).numpy(), torch.cat(caption_vecs).numpy()


def write_vectors_dir(out: Path, images, captions, image_vecs, caption_vecs, encoder: str) -> None:
    """The vectors-directory files, written into a temporary sibling that is renamed into place."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    np.save(tmp / "image_vectors.npy", image_vecs.astype(np.float32))
    np.save(tmp / "caption_vectors.npy", caption_vecs.astype(np.float32))
    rows = [{k: r[k] for k in ("image_id", "file", "split")} for r in images]
    (tmp / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions), encoding="utf-8")
    info = {
        "dense_encoder": encoder,
        "dim": int(image_vecs.shape[1]),
        "written_by": "examples/lavis_encode.py",
    }
    (tmp / "encoder.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    tmp.rename(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", required=True, help="blip_retrieval/coco, blip_retrieval/flickr, albef_retrieval/..."
    )
    ap.add_argument("--captions", required=True, type=Path, help="Karpathy split file")
    ap.add_argument("--images", required=True, type=Path, help="directory the split file's paths are below")
    ap.add_argument("--out", required=True, type=Path, help="vectors directory to create")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    name, _, model_type = args.model.partition("/")
    if model_type not in LAVIS_MODELS.get(name, ()):
        known = ", ".join(f"{m}/{t}" for m, types in LAVIS_MODELS.items() for t in types)
        raise SystemExit(f"lavis_encode: unknown model {args.model!r}; known: {known}")
    if args.out.exists():
        raise SystemExit(f"lavis_encode: {args.out} exists; remove it or choose another --out")
    from lavis.models import load_model_and_preprocess

    images, captions = read_karpathy(args.captions, args.images)
    missing = [r["file"] for r in images if not r["path"].is_file()]
    if missing:
        raise SystemExit(
            f"lavis_encode: {len(missing)} image file(s) missing below {args.images}, e.g. {missing[0]}"
        )
    model, vis, txt = load_model_and_preprocess(
        name=name, model_type=model_type, is_eval=True, device=args.device
    )
    vecs = encode(model, vis["eval"], txt["eval"], images, captions, args.device, args.batch_size)
    write_vectors_dir(args.out, images, captions, *vecs, encoder=f"lavis:{args.model}")
    print(
        json.dumps(
            {
                "out": str(args.out),
                "images": len(images),
                "captions": len(captions),
                "dim": int(vecs[0].shape[1]),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
