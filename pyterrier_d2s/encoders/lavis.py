"""ALBEF and BLIP through LAVIS (``salesforce-lavis``): the checkpoints the D2S paper's vectors come from.

Names look like ``lavis:blip_retrieval/coco`` or ``lavis:albef_retrieval/flickr``. The vectors are the ITC
features LAVIS's own retrieval evaluation (``compute_sim_matrix``) uses: the [CLS] output of the unimodal
text encoder / of the ViT, through ``text_proj`` / ``vision_proj``, L2-normalised; captions first go through
the model's ``eval`` text processor and images through its ``eval`` image processor, as in LAVIS.

LAVIS is not a dependency: it pins ``transformers<4.27`` and ``numpy<2``, which do not install beside this
package's stack. ``examples/lavis_encode.py`` computes the same vectors in LAVIS's own environment without
this package and writes a vectors directory; this class is imported only when such an encoder is built (in an
environment that somehow has both).
"""

from __future__ import annotations

import torch

from .base import DenseEncoder

__all__ = ["LavisEncoder", "LAVIS_MODELS", "parse_lavis_name"]

# model name -> model types LAVIS ships retrieval checkpoints for
LAVIS_MODELS = {"blip_retrieval": ("coco", "flickr"), "albef_retrieval": ("coco", "flickr")}

# LAVIS tokenises retrieval captions to at most 35 tokens (compute_sim_matrix).
LAVIS_MAX_LENGTH = 35


def parse_lavis_name(name: str) -> tuple[str, str]:
    """``lavis:blip_retrieval/coco`` -> ``("blip_retrieval", "coco")``."""
    spec = name.removeprefix("lavis:")
    model, _, model_type = spec.partition("/")
    if model not in LAVIS_MODELS or model_type not in LAVIS_MODELS[model]:
        known = ", ".join(f"lavis:{m}/{t}" for m, types in LAVIS_MODELS.items() for t in types)
        raise ValueError(f"unknown LAVIS encoder {name!r}; known: {known}")
    return model, model_type


def _import_lavis():
    try:
        from lavis.models import load_model_and_preprocess
    except Exception as e:  # ImportError, but also the errors an incompatible torchvision/transformers raise
        raise ImportError(
            "LAVIS encoders need salesforce-lavis, which pins transformers 4.26 and numpy < 2: encode in its own "
            "environment with examples/lavis_encode.py (needs only LAVIS) and use the vectors directory here "
            f"(the import failed with: {type(e).__name__}: {e})"
        ) from e
    return load_model_and_preprocess


class LavisEncoder(DenseEncoder):
    """An ALBEF / BLIP retrieval model loaded through LAVIS.

    Args:
        name: ``lavis:blip_retrieval/coco``, ``lavis:blip_retrieval/flickr``, ``lavis:albef_retrieval/coco``
            or ``lavis:albef_retrieval/flickr``.
        batch_size, device, precision, progress, num_workers: see :class:`DenseEncoder`.
    """

    def __init__(
        self,
        name: str,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str = "auto",
        progress: bool = True,
        num_workers: int | None = None,
    ):
        model_name, model_type = parse_lavis_name(name)
        super().__init__(
            batch_size=batch_size,
            device=device,
            precision=precision,
            progress=progress,
            num_workers=num_workers,
        )
        load_model_and_preprocess = _import_lavis()
        self.name = f"lavis:{model_name}/{model_type}"
        self.model, vis, txt = load_model_and_preprocess(
            name=model_name, model_type=model_type, is_eval=True, device=self.device
        )
        self.image_transform, self.text_transform = vis["eval"], txt["eval"]

    @property
    def dim(self) -> int:
        return int(self.model.text_proj.out_features)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        tok = self.model.tokenizer(
            [self.text_transform(t) for t in texts],
            padding="max_length",
            truncation=True,
            max_length=LAVIS_MAX_LENGTH,
            return_tensors="pt",
        ).to(self.device)
        out = self.model.text_encoder.forward_text(tok)
        return self.model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_batch(self, images: list) -> torch.Tensor:
        pixels = torch.stack([self.image_transform(im) for im in images]).to(self.device)
        feats = self.model.visual_encoder.forward_features(pixels)
        return self.model.vision_proj(feats[:, 0, :])
