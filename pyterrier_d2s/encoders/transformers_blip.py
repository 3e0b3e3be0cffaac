"""BLIP image-text retrieval models through transformers (``Salesforce/blip-itm-base-coco``, ``-flickr``, ...).

The vectors are BLIP's image-text contrastive (ITC) features, exactly as
``BlipForImageTextRetrieval.forward(..., use_itm_head=False)`` computes them before its dot product:

- text: ``normalize(text_proj(text_encoder(input_ids, attention_mask).last_hidden_state[:, 0]))``, the text
  encoder run *without* the image (no cross-attention);
- image: ``normalize(vision_proj(vision_model(pixel_values).last_hidden_state[:, 0]))``.

So the cosine of a caption and an image vector equals the model's own ITC score.
"""

from __future__ import annotations

import torch

from ._hf import TransformersEncoder

__all__ = ["BlipEncoder"]


class BlipEncoder(TransformersEncoder):
    """A BLIP retrieval model (``BlipForImageTextRetrieval``) from a hub name or a local directory, e.g.
    ``Salesforce/blip-itm-base-coco``; arguments as :class:`~pyterrier_d2s.encoders._hf.TransformersEncoder`."""

    model_class = "BlipForImageTextRetrieval"

    @property
    def dim(self) -> int:
        return int(self.model.text_proj.out_features)

    def _text_batch(self, texts: list[str]) -> torch.Tensor:
        # the text encoder without the image (no cross-attention), as the ITC score uses it
        out = self.model.text_encoder(**self._tokens(texts))
        return self.model.text_proj(out.last_hidden_state[:, 0, :])

    def _image_batch(self, images: list) -> torch.Tensor:
        out = self.model.vision_model(pixel_values=self._pixels(images))
        return self.model.vision_proj(out.last_hidden_state[:, 0, :])
