"""The LAVIS path in its own environment: ``examples/lavis_encode.py`` needs only LAVIS (torch, numpy, Pillow)
and writes a vectors directory this package reads. LAVIS itself is not installed here: a stub ``lavis``
package with LAVIS's ``load_model_and_preprocess`` interface and tiny random modules stands in for it, and the
vectors are checked against the same computation done by hand. Whether LAVIS resolves is
``.ci/lavis-dry-run``'s job (a resolver dry run needs the package index)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyterrier_d2s.data import load_pairs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "lavis_encode.py"

_STUB = """
import torch

class _Tok(dict):
    def to(self, device):
        return self

class _Tokenizer:
    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        assert (padding, truncation, max_length, return_tensors) == ("max_length", True, 35, "pt")
        ids = torch.tensor([[len(t) % 7, t.count(" ") % 7, 3] for t in texts])
        return _Tok(input_ids=ids)

class _Out:
    def __init__(self, h):
        self.last_hidden_state = h

class _Text(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(7, 6)
    def forward_text(self, tok):
        return _Out(self.emb(tok["input_ids"]))

class _Vision(torch.nn.Module):
    def forward_features(self, pixels):
        return pixels.flatten(2).transpose(1, 2)[:, :2, :].repeat(1, 1, 2)  # (n, tokens, 6)

class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tokenizer = _Tokenizer()
        self.text_encoder, self.visual_encoder = _Text(), _Vision()
        self.text_proj, self.vision_proj = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)

def load_model_and_preprocess(name, model_type, is_eval, device):
    assert is_eval and (name, model_type) == ("albef_retrieval", "coco")
    vis = lambda im: torch.tensor(list(im.resize((1, 1)).getdata())[0], dtype=torch.float32).view(3, 1, 1) / 255
    txt = lambda t: t.lower().strip(".")
    return _Model(), {"eval": vis}, {"eval": txt}
"""


@pytest.fixture
def lavis_stub(tmp_path) -> Path:
    pkg = tmp_path / "stub" / "lavis"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(_STUB))
    return tmp_path / "stub"


def _karpathy(tmp_path: Path) -> Path:
    images = []
    for n in range(3):
        (tmp_path / "img" / "val2014").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (60 * n, 200 - 50 * n, 90)).save(tmp_path / "img" / "val2014" / f"{n}.jpg")
        sentences = [{"sentid": 10 * n + k, "raw": f"A photo number {n} take {k}."} for k in range(2)]
        split = "test" if n == 2 else "train"
        images.append({"cocoid": 100 + n, "filepath": "val2014", "filename": f"{n}.jpg", "split": split,
                       "sentences": sentences})  # fmt: skip
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images}))
    return path


def _run(stub: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(stub)}  # the stub, and no pyterrier_d2s checkout on the path
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_lavis_encode_writes_a_vectors_directory(tmp_path, lavis_stub):
    captions = _karpathy(tmp_path)
    args = ["--model", "albef_retrieval/coco", "--captions", str(captions), "--images", "img", "--out", "vec"]
    proc = _run(lavis_stub, *args, "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"out": "vec", "images": 3, "captions": 6, "dim": 4}
    data = load_pairs(tmp_path / "vec")
    assert data.image_ids == ["100", "101", "102"] and data.caption_ids == ["0", "1", "10", "11", "20", "21"]
    assert (
        list(data.image_split) == ["train", "train", "test"]
        and data.meta["dense_encoder"] == "lavis:albef_retrieval/coco"
    )
    assert data.caption_texts[2] == "A photo number 1 take 0." and list(data.caption_image) == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    # by hand: the stub's modules, its processors, [CLS] (token 0) through the projections, L2-normalised
    sys.path.insert(0, str(lavis_stub))
    try:
        from lavis.models import load_model_and_preprocess

        model, vis, txt = load_model_and_preprocess("albef_retrieval", "coco", True, "cpu")
    finally:
        sys.path.remove(str(lavis_stub))
        sys.modules.pop("lavis.models", None)
        sys.modules.pop("lavis", None)
    with torch.no_grad():
        pixels = torch.stack(
            [vis["eval"](Image.open(tmp_path / "img" / "val2014" / f"{n}.jpg")) for n in range(3)]
        )
        img = torch.nn.functional.normalize(
            model.vision_proj(model.visual_encoder.forward_features(pixels)[:, 0]), dim=-1
        )
        tok = model.tokenizer([txt["eval"](t) for t in data.caption_texts], "max_length", True, 35, "pt")
        cap = model.text_proj(model.text_encoder.forward_text(tok).last_hidden_state[:, 0])
        cap = torch.nn.functional.normalize(cap, dim=-1)
    np.testing.assert_allclose(data.image_vectors, img.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data.caption_vectors, cap.numpy(), rtol=1e-6, atol=1e-6)
    again = _run(lavis_stub, *args, cwd=tmp_path)
    assert again.returncode != 0 and "vec exists" in again.stderr


def test_lavis_encode_errors_are_one_line(tmp_path, lavis_stub):
    captions = _karpathy(tmp_path)
    (tmp_path / "img" / "val2014" / "1.jpg").unlink()
    proc = _run(lavis_stub, "--model", "albef_retrieval/coco", "--captions", str(captions), "--images", "img",
                "--out", "vec", cwd=tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "1 image file(s) missing below img, e.g. val2014/1.jpg" in proc.stderr
    proc = _run(lavis_stub, "--model", "blip_retrieval/msrvtt", "--captions", "x", "--images", "y", "--out", "z",
                cwd=tmp_path)  # fmt: skip
    assert "unknown model 'blip_retrieval/msrvtt'" in proc.stderr


def test_lavis_encode_needs_only_lavis_torch_numpy_pillow():
    allowed = {"lavis", "torch", "numpy", "PIL"} | set(sys.stdlib_module_names)
    imported = set()
    for node in ast.walk(ast.parse(SCRIPT.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - allowed == set(), (
        f"lavis_encode.py must run without pyterrier-d2s: {imported - allowed}"
    )


def test_the_lavis_extra_is_gone():
    """``pyterrier-d2s[lavis]`` resolved to a LAVIS that downgrades this package's stack: it is not offered."""
    setup = (ROOT / "setup.cfg").read_text()
    assert "salesforce-lavis" not in setup


@pytest.mark.slow
def test_reproduce_paper_encodes_albef_with_the_lavis_env_python(tmp_path, lavis_stub):
    """reproduce_paper.py --encode for ALBEF runs lavis_encode.py with --encode-python (here: this python with
    the stub LAVIS on its path), then trains on the vectors directory it wrote."""
    images = []
    for n in range(24):
        (tmp_path / "img" / "val2014").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10 * n, 250 - 10 * n, (37 * n) % 256)).save(
            tmp_path / "img" / "val2014" / f"{n}.jpg"
        )
        split = "train" if n < 16 else ("val" if n < 20 else "test")
        sentences = [{"sentid": 2 * n + k, "raw": f"a dog {n} on a road {k}"} for k in range(2)]
        images.append(
            {
                "cocoid": n,
                "filepath": "val2014",
                "filename": f"{n}.jpg",
                "split": split,
                "sentences": sentences,
            }
        )
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(lavis_stub)])}
    args = ["--vectors", "v", "--encode", "--images", "mscoco=img", "--captions", "mscoco=dataset_coco.json"]
    args += [
        "--datasets",
        "mscoco",
        "--models",
        "albef",
        "--etas",
        "1e-3",
        "--epochs",
        "1",
        "--evaluate-modes",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "reproduce_paper.py"), *args, "--quiet", "--out", "rp"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lavis_encode.py --model albef_retrieval/coco" in proc.stderr
    assert (
        load_pairs(tmp_path / "v" / "mscoco-albef-dense").meta["dense_encoder"]
        == "lavis:albef_retrieval/coco"
    )
    (run,) = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert run["model"] == "albef" and run["heads"][0]["epochs"] == 1
