"""What a head's terms say, and why an image matched a query.

The top-k terms of captions and of their images, ``*`` marking the terms that occur in the caption (in the
spirit of the paper's Table 4): :func:`explain` is ``d2s explain``; :func:`explain_rows` the same for chosen
caption rows of loaded data and a loaded head.

Per-term contributions of a result's score (query weight × document weight, summing to the exact score):
:func:`term_contributions` (a DataFrame), :func:`explain_results` (:class:`ResultsExplanation`, which renders
as HTML bars in a notebook and as a self-contained page: ``d2s search --explain`` / ``--html FILE``).
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .data import PairedVectors
    from .index import D2SIndex
    from .model import D2S

__all__ = [
    "CONTRIBUTION_COLUMNS",
    "EXPLAINED_CAPTIONS",
    "ResultsExplanation",
    "caption_rows_of",
    "explain",
    "explain_results",
    "explain_search",
    "explain_rows",
    "format_explained",
    "image_files",
    "term_contributions",
    "test_caption_rows",
]

logger = logging.getLogger(__name__)

# How many captions (the first test captions of the set) are explained by default.
EXPLAINED_CAPTIONS = 3


def test_caption_rows(data: PairedVectors, n: int) -> list[int]:
    """The first ``n`` caption rows of ``data``'s evaluation split (all captions without a test split)."""
    if "test" not in data.splits:
        return list(range(min(n, len(data))))
    return [int(r) for r in np.flatnonzero(data.image_split[data.caption_image] == "test")[:n]]


def caption_rows_of(data: PairedVectors, item_id: str) -> list[int]:
    """The caption rows of ``item_id``: that caption's, or every caption of that image; a KeyError if
    ``data`` has neither."""
    if item_id in data.caption_ids:
        return [data.caption_ids.index(item_id)]
    if item_id in data.image_ids:
        image_row = data.image_ids.index(item_id)
        return [int(r) for r in np.flatnonzero(data.caption_image == image_row)]
    raise KeyError(f"{item_id!r} is neither a caption id nor an image id of {data.name}")


def explain_rows(model: D2S, data: PairedVectors, rows: Sequence[int], k: int = 10) -> list[dict]:
    """Per caption row: ``caption_id``, ``caption``, ``image_id``, ``split`` (of its image; ``None`` without
    labels), the top-``k`` ``caption_terms`` (expanded caption) and ``image_terms`` (its image), best first,
    and ``own_terms`` (the caption's own tokens, sorted)."""
    captions = model.encode_texts([data.caption_texts[r] for r in rows], data.caption_vectors[list(rows)])
    images = model.encode_images(data.image_vectors[data.caption_image[list(rows)]])
    own = model.vocab.token_ids([data.caption_texts[r] for r in rows])
    out = []
    for n, r in enumerate(rows):
        own_toks = set(model.vocab.decode(own[n]))
        out.append(
            {
                "caption_id": data.caption_ids[r],
                "caption": data.caption_texts[r],
                "image_id": data.image_ids[data.caption_image[r]],
                "split": None if data.image_split is None else str(data.image_split[data.caption_image[r]]),
                "caption_terms": [t for t, _ in model.top_terms(captions[n], k)[0]],
                "image_terms": [t for t, _ in model.top_terms(images[n], k)[0]],
                "own_terms": sorted(own_toks),
            }
        )
    return out


def explain(
    model: str | os.PathLike,
    data: str | os.PathLike,
    item_id: str | None = None,
    k: int = 20,
    notify: Callable[[str], None] | None = None,
) -> list[dict]:
    """:func:`explain_rows` of the head in ``model`` for caption or image ``item_id`` of ``data`` (default:
    the first :data:`EXPLAINED_CAPTIONS` captions of the head's test images, by its split.json).

    ``notify`` (default: logged as a warning) hears when the item is not a test image of the head: its
    terms were then seen in training.
    """
    from .data import load_pairs, split_for_head
    from .model import D2S

    head = D2S.from_pretrained(model)
    pairs = split_for_head(load_pairs(data), model)
    if item_id is None:
        rows = test_caption_rows(pairs, EXPLAINED_CAPTIONS)
    else:
        try:
            rows = caption_rows_of(pairs, item_id)
        except KeyError:
            raise KeyError(f"{item_id!r} is neither a caption id nor an image id of {data}") from None
    items = explain_rows(head, pairs, rows, k=k)
    if "test" in pairs.splits and any(item["split"] != "test" for item in items):
        (notify or logger.warning)(
            f"{item_id!r} is not a test image of this head ({items[0]['split']}): its terms were seen in training"
        )
    return items


def _marked(terms: list[str], own: set[str]) -> str:
    return " ".join(t + ("*" if t in own else "") for t in terms)


def format_explained(items: list[dict]) -> str:
    """:func:`explain_rows`' items as text: per item a blank line, the caption with its ids, and the caption's
    and the image's terms with ``*`` after those in the caption."""
    lines = []
    for item in items:
        own = set(item["own_terms"])
        lines += [
            "",
            f"{item['caption']}  (caption {item['caption_id']}, image {item['image_id']})",
            f"  caption: {_marked(item['caption_terms'], own)}",
            f"  image:   {_marked(item['image_terms'], own)}",
        ]
    return "\n".join(lines)


# -- why did this image match? -------------------------------------------------------------------------
#: Columns of :func:`term_contributions`' frame.
CONTRIBUTION_COLUMNS = ["qid", "docno", "rank", "score", "term", "query_weight", "doc_weight", "contribution"]

# The bars of an HTML explanation: how many terms per result, and the size of a thumbnail (pixels).
HTML_TERMS = 10
THUMBNAIL_PX = 160


def term_contributions(results: pd.DataFrame, index: D2SIndex | str | os.PathLike) -> pd.DataFrame:
    """Per result row and shared term: ``query_weight × doc_weight = contribution`` (every term the query and
    the stored image vector share, so a row's contributions sum to its exact score).

    ``results``: a result frame with ``qid``, ``docno`` and ``query_toks`` (what ``query_encoder() >>
    index.retriever()`` returns); ``rank`` and ``score`` are copied when present. Terms of a result are
    sorted by contribution, largest first; a result sharing no term has no rows.

    Raises:
        ValueError: without a ``query_toks`` column; KeyError naming docnos the index does not hold.
    """
    from .index import D2SIndex

    missing = [c for c in ("qid", "docno", "query_toks") if c not in results.columns]
    if missing:
        raise ValueError(f"explaining results needs the columns qid, docno, query_toks; missing {missing}")
    index = index if isinstance(index, D2SIndex) else D2SIndex(index)
    fwd = index.forward()
    rows = fwd.rows([str(d) for d in results["docno"]])
    term_index, terms = fwd.term_index, fwd.terms
    out: list[tuple] = []
    for n, r in enumerate(results.itertuples(index=False)):
        lo, hi = fwd.matrix.indptr[rows[n]], fwd.matrix.indptr[rows[n] + 1]
        doc = dict(zip(fwd.matrix.indices[lo:hi].tolist(), fwd.matrix.data[lo:hi].tolist(), strict=True))
        rank, score = getattr(r, "rank", n), getattr(r, "score", np.nan)
        shared = [
            (term_index[t], float(w)) for t, w in (r.query_toks or {}).items() if term_index.get(t) in doc
        ]
        for col, qw in sorted(shared, key=lambda cw: -cw[1] * doc[cw[0]]):
            out.append((r.qid, r.docno, rank, score, str(terms[col]), qw, doc[col], qw * doc[col]))
    return pd.DataFrame(out, columns=CONTRIBUTION_COLUMNS)


def image_files(data: PairedVectors, root: str | os.PathLike) -> dict[str, Path]:
    """``{image_id: file}`` for the images of ``data`` whose ``images.jsonl`` line names a ``file`` that
    exists below ``root`` (the directory ``d2s encode --images`` read them from)."""
    found = {}
    for record in data.meta.get("images") or []:
        if "file" in record and "image_id" in record:
            path = Path(root) / str(record["file"])
            if path.is_file():
                found[str(record["image_id"])] = path
    return found


def _thumbnail(path: Path) -> str | None:
    """A small JPEG of the image at ``path`` as a ``data:`` URI (so that a page needs no other file)."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
    except (OSError, UnidentifiedImageError):
        return None  # an unreadable file: the result is shown without its picture
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class ResultsExplanation:
    """Results and why they matched: ``results`` (the result frame), ``terms`` (:func:`term_contributions`),
    ``thumbnails`` (``{docno: data URI}``, empty when the images' files are unknown) and the ``query`` text.

    In a notebook it renders itself (``_repr_html_``): per result its rank, docno, score, thumbnail and the
    top contributing terms as bars; :meth:`html_page` is the same as a self-contained page.
    """

    results: pd.DataFrame
    terms: pd.DataFrame
    thumbnails: dict[str, str] = field(default_factory=dict)
    query: str | None = None

    def top_terms(self, qid: str, docno: str, k: int = HTML_TERMS) -> pd.DataFrame:
        """The ``k`` largest contributions of one result (all of them with ``k=None``)."""
        t = self.terms
        rows = t[(t["qid"] == qid) & (t["docno"] == docno)]
        return rows if k is None else rows.head(k)

    def records(self, k: int = HTML_TERMS) -> list[dict]:
        """Per result: ``docno``, ``score``, ``rank``, ``explained`` (the contributions' sum) and ``terms``
        (the top ``k``: ``term``, ``query_weight``, ``doc_weight``, ``contribution``)."""
        out = []
        for r in self.results.itertuples(index=False):
            mine = self.top_terms(r.qid, r.docno, None)
            top = mine.head(k)[["term", "query_weight", "doc_weight", "contribution"]]
            out.append(
                {
                    "docno": str(r.docno),
                    "score": float(r.score),
                    "rank": int(r.rank),
                    "explained": float(mine["contribution"].sum()),
                    "terms": top.to_dict(orient="records"),
                }
            )
        return out

    def format_text(self, k: int = 5) -> str:
        """Per result a line ``rank docno score`` and beneath it its top ``k`` terms as ``term q×d=c``."""
        lines = [] if self.query is None else [f"query: {self.query}"]
        for rec in self.records(k):
            lines.append(f"{rec['rank'] + 1:3d}  {rec['docno']:>12}  {rec['score']:.4f}")
            parts = [
                f"{t['term']} {t['query_weight']:.3f}×{t['doc_weight']:.3f}={t['contribution']:.4f}"
                for t in rec["terms"]
            ]
            lines.append("       " + ("  ".join(parts) if parts else "(no shared term)"))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return _html_results(self)

    def html_page(self, title: str = "D2S search results") -> str:
        """A complete HTML document (styles and thumbnails inline) of the results and their terms."""
        return _HTML_PAGE.format(title=html.escape(title), css=_HTML_CSS, body=_html_results(self))

    def save_html(self, path: str | os.PathLike, title: str = "D2S search results") -> Path:
        """Write :meth:`html_page` to ``path`` (its directory is created); the path written."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html_page(title), encoding="utf-8")
        return path


def explain_results(
    results: pd.DataFrame,
    index: D2SIndex | str | os.PathLike,
    *,
    images: dict[str, str | os.PathLike] | None = None,
    query: str | None = None,
) -> ResultsExplanation:
    """Why each result matched (:class:`ResultsExplanation`): :func:`term_contributions` of ``results`` over
    ``index``, with thumbnails of the docnos ``images`` maps to image files (e.g. :func:`image_files`)."""
    terms = term_contributions(results, index)
    thumbs = {}
    for docno in {str(d) for d in results["docno"]} & set(images or {}):
        uri = _thumbnail(Path(images[docno]))
        if uri is not None:
            thumbs[docno] = uri
    if query is None and "query" in results.columns and len(results):
        query = str(results["query"].iloc[0])
    return ResultsExplanation(results.reset_index(drop=True), terms, thumbs, query)


def explain_search(
    results: pd.DataFrame,
    index: str | os.PathLike,
    *,
    query: str | None = None,
    data: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
) -> ResultsExplanation:
    """:func:`explain_results` of a search's ``results`` over the index at ``index`` (``d2s search --explain``);
    with ``data`` and ``images`` (the directory its images.jsonl's ``file`` names are relative to) the results
    get thumbnails."""
    files = None
    if images is not None:
        if data is None:
            raise ValueError("--images needs --data (its images.jsonl names each image's file)")
        from .data import load_pairs

        files = image_files(load_pairs(data), images)
    return explain_results(results, index, images=files, query=query)


_HTML_CSS = """
.d2s-results { font-family: system-ui, sans-serif; font-size: 14px; max-width: 60em; }
.d2s-hit { display: flex; gap: 1em; border-top: 1px solid #ddd; padding: .6em 0; }
.d2s-hit img { width: 160px; height: auto; align-self: flex-start; border-radius: 4px; }
.d2s-head { font-weight: 600; margin-bottom: .3em; }
.d2s-score { color: #555; font-weight: 400; }
.d2s-term { display: flex; align-items: center; gap: .5em; height: 1.4em; }
.d2s-label { width: 9em; text-align: right; font-family: ui-monospace, monospace; }
.d2s-track { width: 12em; flex: none; }
.d2s-bar { display: block; background: #3b7dd8; height: .9em; border-radius: 2px; }
.d2s-value { color: #444; font-family: ui-monospace, monospace; font-size: 12px; }
.d2s-rest { color: #777; font-size: 12px; margin-left: 9.5em; }
"""

_HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style></head>
<body style="font-family: system-ui, sans-serif"><h1>{title}</h1>
{body}
</body></html>
"""


def _html_bars(terms: pd.DataFrame, score: float, rest: float, others: int) -> str:
    """The bars of one result's terms (length: contribution relative to its largest one; the share of the
    score is printed beside) and a line for the remaining terms."""
    parts = []
    top = float(terms["contribution"].max()) if len(terms) else 0.0
    for t in terms.itertuples(index=False):
        length = 0.0 if top <= 0 else 100 * max(0.0, t.contribution / top)
        share = "" if score <= 0 else f" ({100 * t.contribution / score:.1f} %)"
        parts.append(
            f'<div class="d2s-term"><span class="d2s-label">{html.escape(t.term)}</span>'
            f'<span class="d2s-track"><span class="d2s-bar" style="width:{length:.1f}%"></span></span>'
            f'<span class="d2s-value">{t.query_weight:.3f} × {t.doc_weight:.3f} = {t.contribution:.4f}{share}</span>'
            "</div>"
        )
    if others:
        parts.append(f'<div class="d2s-rest">+ {others} more terms: {rest:.4f}</div>')
    return "".join(parts) or '<div class="d2s-rest">no term shared with the query</div>'


def _html_results(explanation: ResultsExplanation) -> str:
    """The results of ``explanation`` as an HTML fragment (one block per result, best first)."""
    blocks = []
    if explanation.query is not None:
        blocks.append(f'<p class="d2s-query">query: <q>{html.escape(explanation.query)}</q></p>')
    for r in explanation.results.itertuples(index=False):
        mine = explanation.top_terms(r.qid, r.docno, None)
        top = mine.head(HTML_TERMS)
        rest = float(mine["contribution"].iloc[HTML_TERMS:].sum())
        thumb = explanation.thumbnails.get(str(r.docno))
        img = f'<img src="{thumb}" alt="image {html.escape(str(r.docno))}">' if thumb else ""
        blocks.append(
            f'<div class="d2s-hit">{img}<div><div class="d2s-head">{int(r.rank) + 1}. '
            f'<span class="d2s-docno">{html.escape(str(r.docno))}</span> '
            f'<span class="d2s-score">score {float(r.score):.4f}</span></div>'
            f"{_html_bars(top, float(r.score), rest, max(0, len(mine) - HTML_TERMS))}</div></div>"
        )
    return f'<div class="d2s-results">{"".join(blocks)}</div>'
