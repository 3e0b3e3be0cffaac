"""Dense encoders and the resumable vector cache, on tiny random-weight BLIP and CLIP models and real photos.

The models are built from small configs, saved with their tokenizer (the offline bert-base-uncased
vocabulary) and PIL image processor, and loaded back through ``load_encoder(dir)``, the path a user takes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pyterrier_d2s.data import load_pairs
from pyterrier_d2s.encoders import (
    BlipEncoder,
    ClipEncoder,
    DenseEncoder,
    ImageError,
    PrecomputedEncoder,
    load_encoder,
    load_image,
    resolve_device,
)
from pyterrier_d2s.encoders.cache import WORK_DIR, encode_vectors_dir
from pyterrier_d2s.encoders.inputs import read_encode_inputs

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ("astronaut", "coffee", "chelsea")
TEXTS = ["an astronaut in a white suit", "a cup of coffee on a saucer", "a ginger cat", "a cat"]
CAPTIONS = {
    "astronaut": ["an astronaut in a white suit", "a woman in front of a flag"],
    "coffee": ["a cup of coffee on a saucer"],
    "chelsea": ["a ginger cat"],
}
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _bert_tokenizer():
    from transformers import AutoTokenizer

    from pyterrier_d2s.vocab import default_tokenizer_dir

    return AutoTokenizer.from_pretrained(default_tokenizer_dir())


def _spread_weights(model: torch.nn.Module) -> None:
    # Default init (std 0.02) makes every input map to nearly the same vector; wider random weights give
    # vectors that differ between inputs, so equality checks below mean something.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tok = _bert_tokenizer()
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=64,
            encoder_hidden_size=32,
            bos_token_id=tok.cls_token_id,
            pad_token_id=tok.pad_token_id,
            sep_token_id=tok.sep_token_id,
            **TINY,
        ),
        vision_config=dict(image_size=32, patch_size=16, **TINY),
        image_text_hidden_size=16,
    )
    model = BlipForImageTextRetrieval(config).eval()
    _spread_weights(model)
    d = tmp_path_factory.mktemp("tiny-blip")
    model.save_pretrained(d)
    BlipProcessor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tok).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _bert_tokenizer()
    config = CLIPConfig(
        # eos = [SEP]: CLIP pools the text at its end-of-text token
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=64,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            pad_token_id=tok.pad_token_id,
            **TINY,
        ),
        vision_config=dict(image_size=32, patch_size=16, **TINY),
        projection_dim=24,
    )
    model = CLIPModel(config).eval()
    _spread_weights(model)
    d = tmp_path_factory.mktemp("tiny-clip")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        d
    )
    return d


@pytest.fixture(scope="module")
def blip(blip_dir) -> DenseEncoder:
    return load_encoder(blip_dir, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """The three photos as JPEG files, plus captions.jsonl beside the directory."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    images = d / "images"
    images.mkdir()
    for name in PHOTOS:
        Image.fromarray(getattr(skimage_data, name)()).save(images / f"{name}.jpg", quality=90)
    rows = [
        {"caption_id": f"{name}-{k}", "image_id": name, "caption": text}
        for name, texts in CAPTIONS.items()
        for k, text in enumerate(texts)
    ]
    (d / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _paths(photos: Path) -> list[Path]:
    return [photos / "images" / f"{n}.jpg" for n in PHOTOS]


def test_load_encoder_picks_the_backend_from_config(blip_dir, clip_dir, blip):
    assert isinstance(blip, BlipEncoder) and blip.dim == 16 and blip.name == str(blip_dir)
    clip = load_encoder(clip_dir, progress=False)
    assert isinstance(clip, ClipEncoder) and clip.dim == 24
    assert resolve_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert blip.device == resolve_device()


def test_unsupported_model_type_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'bert' is not supported"):
        load_encoder(tmp_path)


def _check_vectors(v: np.ndarray, n: int, dim: int) -> None:
    assert v.shape == (n, dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # distinct inputs give distinct vectors (the random model is not degenerate)
    assert np.abs(v[:, None, :] - v[None, :, :]).max(axis=2)[~np.eye(n, dtype=bool)].min() > 1e-3


@pytest.mark.parametrize("backend", ["blip", "clip"])
def test_vectors_are_unit_float32_deterministic_and_batch_independent(backend, blip_dir, clip_dir, photos):
    enc = load_encoder(blip_dir if backend == "blip" else clip_dir, batch_size=2, progress=False)
    t = enc.encode_text(TEXTS)
    i = enc.encode_images(_paths(photos))
    _check_vectors(t, len(TEXTS), enc.dim)
    _check_vectors(i, len(PHOTOS), enc.dim)
    np.testing.assert_array_equal(t, enc.encode_text(TEXTS))
    np.testing.assert_array_equal(i, enc.encode_images(_paths(photos)))
    enc.batch_size = 1  # padding and batching must not change a text's or an image's vector
    np.testing.assert_allclose(enc.encode_text(TEXTS), t, atol=1e-5)
    np.testing.assert_allclose(enc.encode_images(_paths(photos)), i, atol=1e-5)
    assert enc.encode_text([]).shape == (0, enc.dim)


# The references below run the model's own processor, which is torchvision-based where torchvision is
# installed (its resampling differs from the PIL processor the encoders use, ~1e-3 in cosine).
_needs_pil_reference = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is not None,
    reason="the model's default image processor is the torchvision one here",
)


@_needs_pil_reference
def test_blip_cosines_equal_the_models_own_itc_scores(blip_dir, photos):
    from PIL import Image
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    model = BlipForImageTextRetrieval.from_pretrained(blip_dir).eval()
    processor = AutoProcessor.from_pretrained(blip_dir)
    images = [Image.open(p).convert("RGB") for p in _paths(photos)]
    inputs = processor(images=images, text=TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        itc = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            use_itm_head=False,
        ).itm_score.numpy()
    blip = load_encoder(blip_dir, progress=False, device="cpu")  # fp32, like the reference above
    ours = blip.encode_images(images) @ blip.encode_text(TEXTS[:3]).T
    assert itc.shape == (3, 3) and itc.std() > 1e-3
    np.testing.assert_allclose(ours, itc, atol=1e-5)


@_needs_pil_reference
def test_clip_cosines_equal_the_models_own_logits(clip_dir, photos):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    enc = load_encoder(clip_dir, progress=False, device="cpu")  # fp32, like the reference below
    model = CLIPModel.from_pretrained(clip_dir).eval()
    images = [Image.open(p).convert("RGB") for p in _paths(photos)]
    tok = AutoTokenizer.from_pretrained(clip_dir)(TEXTS, padding=True, return_tensors="pt")
    pixels = AutoImageProcessor.from_pretrained(clip_dir)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pixels)
        cosine = (out.logits_per_text / model.logit_scale.exp()).numpy()
    np.testing.assert_allclose(enc.encode_text(TEXTS) @ enc.encode_images(images).T, cosine, atol=1e-5)


def test_an_image_as_path_pil_or_bytes_gives_one_vector(blip, photos):
    path = _paths(photos)[1]
    v = blip.encode_images([path, str(path), load_image(path), path.read_bytes()])
    np.testing.assert_allclose(v, np.repeat(v[:1], 4, axis=0), atol=1e-6)
    # greyscale input is converted to RGB rather than failing in the image processor
    assert load_image(load_image(path).convert("L")).mode == "RGB"


def test_fp16_request_on_cpu_computes_in_fp32(blip_dir, blip):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    half = BlipEncoder(blip_dir, precision="fp16", progress=False, batch_size=2)
    np.testing.assert_array_equal(half.encode_text(TEXTS), blip.encode_text(TEXTS))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast is only used on a GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_half_precision_stays_close_to_fp32(blip_dir, photos, precision):
    fp32 = BlipEncoder(blip_dir, device="cuda", precision="fp32", progress=False)
    half = BlipEncoder(blip_dir, device="cuda", precision=precision, progress=False)
    for a, b in (
        (half.encode_text(TEXTS), fp32.encode_text(TEXTS)),
        (half.encode_images(_paths(photos)), fp32.encode_images(_paths(photos))),
    ):
        assert a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert (a * b).sum(axis=1).min() > 0.99


@pytest.fixture()
def bad_image(tmp_path) -> Path:
    p = tmp_path / "val2017" / "000042.jpg"
    p.parent.mkdir()
    p.write_bytes(b"\xff\xd8 this is not a JPEG")
    return p


def test_unreadable_images_raise_an_error_naming_docno_and_file(blip, photos, bad_image):
    good = _paths(photos)
    with pytest.raises(
        ImageError, match=r"image '42' \(.*val2017/000042\.jpg\): cannot identify image file"
    ) as e:
        blip.encode_images([good[0], bad_image, good[1]], ids=["1", "42", "7"])
    assert e.value.image_id == "42" and e.value.source.endswith("000042.jpg")
    with pytest.raises(ImageError, match=r"image 'gone' \(.*missing\.jpg\): no such file"):
        blip.encode_images([photos / "missing.jpg"], ids=["gone"])
    truncated = bad_image.with_name("truncated.jpg")
    truncated.write_bytes(good[0].read_bytes()[:2000])
    with pytest.raises(ImageError, match=r"image 't' \(.*truncated\.jpg\)"):
        blip.encode_images([truncated], ids=["t"])


def test_skip_mode_keeps_the_rest_of_the_batch_and_reports(blip, photos, bad_image, caplog):
    good = _paths(photos)
    result = blip.encode_images_with_ids(
        [good[0], bad_image, good[1], good[2]], ids=["a", "42", "b", "c"], on_error="skip"
    )
    assert result.ids == ["a", "b", "c"]
    assert list(result.skipped) == ["42"] and "000042.jpg" in result.skipped["42"]
    np.testing.assert_allclose(result.vectors, blip.encode_images(good), atol=1e-6)
    assert "'42'" in caplog.text and "skipped 1 unreadable" in caplog.text


def test_one_decoding_thread_does_not_deadlock(blip_dir, photos, bad_image):
    """With num_workers=1 (the default on a one-CPU machine) the prefetched batch once waited on the pool
    thread it occupied; the vectors, skips and errors must be those of several threads."""
    import threading

    good = _paths(photos)
    inputs, ids = [good[0], bad_image, good[1], good[2], good[0]], ["a", "42", "b", "c", "d"]
    results = {}

    def run(workers: int) -> None:
        encoder = load_encoder(blip_dir, batch_size=2, progress=False, num_workers=workers)
        results[workers] = encoder.encode_images_with_ids(inputs, ids=ids, on_error="skip")
        with pytest.raises(ImageError, match="image '42'"):
            encoder.encode_images(inputs, ids=ids)
        results[workers, "raised"] = True

    for workers in (1, 3):
        thread = threading.Thread(target=run, args=(workers,), daemon=True)
        thread.start()
        thread.join(timeout=120)
        assert not thread.is_alive(), f"encoding with num_workers={workers} hangs"
        assert results[workers, "raised"]
    one, three = results[1], results[3]
    assert one.ids == three.ids == ["a", "b", "c", "d"] and list(one.skipped) == ["42"]
    np.testing.assert_array_equal(one.vectors, three.vectors)


def test_lavis_missing_gives_an_install_hint():
    try:
        import lavis  # noqa: F401

        pytest.skip("LAVIS is installed here")
    except Exception:
        pass
    with pytest.raises(ImportError, match=r"pins transformers 4.26.*examples/lavis_encode.py"):
        load_encoder("lavis:blip_retrieval/coco")
    with pytest.raises(ValueError, match="unknown LAVIS encoder 'lavis:blip_retrieval/msrvtt'"):
        load_encoder("lavis:blip_retrieval/msrvtt")


# -- the vector cache ------------------------------------------------------------------------------------------


def _run_cli(argv: list[str], capsys) -> dict:
    from pyterrier_d2s.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _encode_argv(blip_dir, photos, out, *extra) -> list[str]:
    return [
        "encode",
        "--encoder",
        str(blip_dir),
        "--images",
        str(photos / "images"),
        "--captions",
        str(photos / "captions.jsonl"),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(blip, photos) -> dict:
    """Vectors computed directly, without the cache, in the order d2s encode writes them."""
    names = sorted(PHOTOS)  # an image directory is read in path order
    texts = [t for n in CAPTIONS for t in CAPTIONS[n]]
    return {
        "image_ids": names,
        "images": blip.encode_images([photos / "images" / f"{n}.jpg" for n in names]),
        "captions": blip.encode_text(texts),
        "texts": texts,
    }


def _assert_matches_reference(out: Path, reference: dict) -> None:
    pairs = load_pairs(out)
    assert pairs.image_ids == reference["image_ids"]
    assert pairs.caption_texts == reference["texts"] and len(set(pairs.caption_ids)) == len(pairs.caption_ids)
    np.testing.assert_allclose(pairs.image_vectors, reference["images"], atol=1e-6)
    np.testing.assert_allclose(pairs.caption_vectors, reference["captions"], atol=1e-6)
    assert not (out / WORK_DIR).exists()


def test_d2s_encode_writes_a_vectors_dir_equal_to_fresh_vectors(
    blip_dir, photos, reference, tmp_path, capsys
):
    out = tmp_path / "vectors"
    report = _run_cli(_encode_argv(blip_dir, photos, out, "--chunk-size", "2"), capsys)
    assert report["images"] == 3 and report["captions"] == 4 and report["dim"] == 16
    assert report["encoded_images"] == 3 and report["resumed_images"] == 0 and report["skipped_images"] == []
    _assert_matches_reference(out, reference)
    assert json.loads((out / "encoder.json").read_text())["dense_encoder"] == str(blip_dir)
    assert load_pairs(out).meta["dense_encoder"] == str(blip_dir)  # what d2s train records in the head
    # the cached vectors serve as an encoder too
    pre = load_encoder(out)
    assert isinstance(pre, PrecomputedEncoder)
    np.testing.assert_allclose(pre.encode_text(reference["texts"][:2]), reference["captions"][:2], atol=1e-6)
    np.testing.assert_allclose(pre.encode_images(["coffee"]), reference["images"][2:3], atol=1e-6)
    # a finished directory is not silently re-encoded
    from pyterrier_d2s.cli import main

    assert main(_encode_argv(blip_dir, photos, out)) == 2
    assert "already holds encoded vectors" in capsys.readouterr().err


class _FailingEncoder(BlipEncoder):
    """Raises on its ``fail_on``-th image batch: an interruption between two committed chunks."""

    fail_on = 2
    calls = 0

    def _image_batch(self, images):
        type(self).calls += 1
        if type(self).calls == self.fail_on:
            raise RuntimeError("interrupted")
        return super()._image_batch(images)


def test_an_interrupted_encode_resumes_without_loss_or_duplicates(blip_dir, photos, reference, tmp_path):
    images, captions = read_encode_inputs(photos / "images", photos / "captions.jsonl")
    out = tmp_path / "vectors"
    failing = _FailingEncoder(blip_dir, batch_size=1, progress=False)
    failing.name = str(blip_dir)  # the same encoder, as far as the cache is concerned
    with pytest.raises(RuntimeError, match="interrupted"):
        encode_vectors_dir(failing, images, captions, out, chunk_size=1, progress=False)
    log = (out / WORK_DIR / "images.log.jsonl").read_text().splitlines()
    assert [json.loads(line)["ids"] for line in log] == [["astronaut"]]

    seen: list[str] = []
    resumed = load_encoder(blip_dir, batch_size=2, progress=False)
    encode_images = resumed.encode_images_with_ids
    resumed.encode_images_with_ids = lambda imgs, ids, **kw: (
        seen.extend(ids),
        encode_images(imgs, ids, **kw),
    )[1]
    summary = encode_vectors_dir(resumed, images, captions, out, chunk_size=2, progress=False)
    assert seen == ["chelsea", "coffee"]  # the committed image is not encoded again
    assert (summary.resumed_images, summary.encoded_images, summary.images) == (1, 2, 3)
    _assert_matches_reference(out, reference)


def test_a_sigkilled_encode_resumes_to_the_uninterrupted_result(
    blip_dir, photos, reference, tmp_path, capsys
):
    out = tmp_path / "vectors"
    # A real kill: the process SIGKILLs itself right after its first committed chunk (no cleanup runs).
    script = textwrap.dedent(
        f"""
        import os, signal
        from pyterrier_d2s.encoders import load_encoder
        from pyterrier_d2s.encoders.cache import encode_vectors_dir
        from pyterrier_d2s.encoders.inputs import read_encode_inputs
        images, captions = read_encode_inputs({str(photos / "images")!r}, {str(photos / "captions.jsonl")!r})
        enc = load_encoder({str(blip_dir)!r}, batch_size=2, progress=False)
        def kill(kind, done, total):
            os.kill(os.getpid(), signal.SIGKILL)
        encode_vectors_dir(enc, images, captions, {str(out)!r}, chunk_size=1, progress=False, on_chunk=kill)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not (out / "image_vectors.npy").exists()
    log = out / WORK_DIR / "images.log.jsonl"
    assert len(log.read_text().splitlines()) == 1
    with open(log, "ab") as f:  # and a torn half-line, as a kill during the append would leave
        f.write(b'{"shard": "images-000001-dead')
    report = _run_cli(_encode_argv(blip_dir, photos, out, "--chunk-size", "1"), capsys)
    assert (report["resumed_images"], report["encoded_images"], report["images"]) == (1, 2, 3)
    assert report["captions"] == 4
    _assert_matches_reference(out, reference)


def test_skip_bad_images_in_d2s_encode(blip_dir, photos, reference, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for p in _paths(photos):
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.png").write_bytes(b"garbage")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(
        (photos / "captions.jsonl").read_text()
        + json.dumps({"caption_id": "broken-0", "image_id": "broken", "caption": "nothing"})
        + "\n"
    )
    argv = [
        "encode",
        "--encoder",
        str(blip_dir),
        "--images",
        str(images),
        "--captions",
        str(captions),
        "--batch-size",
        "2",
        "--quiet",
        "--out",
    ]
    from pyterrier_d2s.cli import main

    assert main([*argv, str(tmp_path / "strict")]) == 2
    assert "image 'broken' (" in capsys.readouterr().err
    report = _run_cli([*argv, str(tmp_path / "skip"), "--skip-bad-images"], capsys)
    assert report["skipped_images"] == ["broken"] and report["dropped_captions"] == 1
    _assert_matches_reference(tmp_path / "skip", reference)


def test_karpathy_captions_and_image_lists(blip_dir, photos, reference, tmp_path, capsys):
    meta = {
        "images": [
            {
                "imgid": k,
                "filepath": "images",
                "filename": f"{n}.jpg",
                "split": "test" if k else "train",
                "sentences": [{"sentid": 10 * k + j, "raw": t} for j, t in enumerate(CAPTIONS[n])],
            }
            for k, n in enumerate(sorted(PHOTOS))
        ]
    }
    (tmp_path / "dataset_meta.json").write_text(json.dumps(meta))
    report = _run_cli(
        [
            "encode",
            "--encoder",
            str(blip_dir),
            "--images",
            str(photos),
            "--captions",
            str(tmp_path / "dataset_meta.json"),
            "--out",
            str(tmp_path / "k"),
            "--quiet",
        ],
        capsys,
    )
    assert report["images"] == 3
    pairs = load_pairs(tmp_path / "k")
    assert pairs.image_ids == ["0", "1", "2"] and pairs.splits == ["test", "train"]
    np.testing.assert_allclose(pairs.image_vectors, reference["images"], atol=1e-6)
    # a text list (id<TAB>path) gives the same images
    (photos / "list.txt").write_text("".join(f"{n}\timages/{n}.jpg\n" for n in sorted(PHOTOS)))
    items, _ = read_encode_inputs(photos / "list.txt", photos / "captions.jsonl")
    assert [(i.image_id, i.path) for i in items] == [
        (n, photos / "images" / f"{n}.jpg") for n in sorted(PHOTOS)
    ]


def test_a_d2s_model_encodes_raw_texts_and_images_through_its_encoder(blip, photos, vocab):
    from pyterrier_d2s.head import D2SHead, D2SHeadConfig
    from pyterrier_d2s.model import D2S

    head = D2SHead(D2SHeadConfig(input_dim=blip.dim, hidden_dim=16, init="random"), vocab=vocab)
    model = D2S(head, dense_encoder=blip)
    texts = model.encode_texts(TEXTS[:2])
    np.testing.assert_allclose(
        texts.toarray(),
        model.encode_texts(TEXTS[:2], vectors=blip.encode_text(TEXTS[:2])).toarray(),
        atol=1e-6,
    )
    images = model.encode_images(images=_paths(photos))
    assert images.shape == (3, len(vocab)) and images.nnz > 0


def test_precomputed_encoder_takes_the_options_load_encoder_passes_every_backend():
    from pyterrier_d2s.data import load_pairs
    from pyterrier_d2s.encoders import load_encoder

    pairs = load_pairs("coco500")
    enc = load_encoder("precomputed:coco500", batch_size=8, device="cpu", precision="fp32")
    got = enc.encode_text(pairs.caption_texts[:3])
    expected = pairs.caption_vectors[:3] / np.linalg.norm(pairs.caption_vectors[:3], axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
