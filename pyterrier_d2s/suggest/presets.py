"""The four bi-encoders of the image-suggestion paper (arXiv 2402.07736), as named presets.

| preset | query encoder | document | document encoder(s) |
| --- | --- | --- | --- |
| M1 | MLM (text) | image | MLM of the image vector (the D2S head) |
| M2 | MLP (text) | captions | MLM (text) |
| M3 | MLP (text) | captions | MLP (text) |
| M4 | MLP (text) | image + captions | MLP of the captions **plus** MLM of the image vector |

M4 combines its two document representations by summing them, ``s_d = s_captions + s_image``: both are
non-negative vectors over the same vocabulary, so the query's score is ``q·s_captions + q·s_image``, a late
fusion of a text match and an image match that is trained end to end, stored as one sparse vector in one
index (its support is the union of the two) and searched by the same engines. A maximum would let only one
modality win each term and hide the other from the gradient; a concatenation would need two indexes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENCODER_KINDS", "PRESETS", "Preset", "preset"]

ENCODER_KINDS = ("mlp", "mlm")


@dataclass(frozen=True)
class Preset:
    """One bi-encoder: the query encoder's kind, the caption encoder's kind (None: captions unused) and
    whether the document's image vector goes through the image MLM encoder."""

    name: str
    query: str
    caption: str | None
    image: bool

    def __post_init__(self) -> None:
        for side, kind in (("query", self.query), ("caption", self.caption)):
            if kind is not None and kind not in ENCODER_KINDS:
                raise ValueError(f"{side} encoder must be one of {ENCODER_KINDS}, not {kind!r}")
        if self.caption is None and not self.image:
            raise ValueError(f"preset {self.name}: a document needs captions, an image or both")

    @property
    def uses_captions(self) -> bool:
        return self.caption is not None

    def describe(self) -> str:
        parts = [f"{self.caption.upper()}(captions)"] if self.caption is not None else []
        doc = " + ".join(parts + ["MLM(image)"] * self.image)
        return f"{self.name}: {self.query.upper()}(query) / {doc}"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("M1", query="mlm", caption=None, image=True),
        Preset("M2", query="mlp", caption="mlm", image=False),
        Preset("M3", query="mlp", caption="mlp", image=False),
        Preset("M4", query="mlp", caption="mlp", image=True),
    )
}


def preset(name: str) -> Preset:
    """The preset ``name`` (``M1`` ... ``M4``, case-insensitive)."""
    try:
        return PRESETS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
