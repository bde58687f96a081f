"""The app's HTML and Markdown: escaping, the explanation's concept tables, inline images.

Why apart from the request handling: everything a visitor's text or a model's names reach on the
page is escaped here, in one place (`_md` for Markdown, `_h` for the HTML template).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Protocol

from iis_hf.app.settings import NEGATIVE, POSITIVE


class ThumbnailSource(Protocol):
    """What the concept tables ask of a loaded model: its thumbnails as data URIs (cached)."""

    def thumbnail_uri(self, index: int, thumbnail) -> str: ...


def _md(text: str) -> str:
    """Text for a Markdown component: HTML-escaped, Markdown's special characters escaped."""
    escaped = html.escape(str(text), quote=False)
    for ch in "\\`*_{}[]#|~$":
        escaped = escaped.replace(ch, "\\" + ch)
    return escaped


def _h(text: Any) -> str:
    """Text for the explanation HTML (gr.HTML fills a JS/Handlebars template: escape those too)."""
    escaped = html.escape(str(text), quote=True)
    for ch, entity in (("{", "&#123;"), ("}", "&#125;"), ("$", "&#36;"), ("`", "&#96;")):
        escaped = escaped.replace(ch, entity)
    return escaped


def png_data_uri(thumbnail) -> str:
    """A (3, h, w) uint8 tensor (or an (h, w, 3) array) as a PNG data URI."""
    import numpy as np
    from PIL import Image

    array = thumbnail.detach().cpu().numpy() if hasattr(thumbnail, "detach") else np.asarray(thumbnail)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


CSS = """
.iis-result { font-size: 0.95em; }
.iis-headline { font-size: 1.15em; margin: 0 0 0.3em 0; }
.iis-backbone { margin: 0 0 0.3em 0; }
.iis-equation { opacity: 0.75; font-family: ui-monospace, monospace; font-size: 0.85em; margin: 0 0 0.8em 0; }
.iis-result h4 { margin: 0.8em 0 0.3em 0; }
.iis-concepts { border-collapse: collapse; width: 100%; }
.iis-concepts td, .iis-concepts th { padding: 3px 6px; text-align: left; vertical-align: middle; }
.iis-concepts th { font-weight: 600; opacity: 0.75; font-size: 0.85em; }
.iis-concepts tr + tr td { border-top: 1px solid rgba(128, 128, 128, 0.25); }
.iis-concepts .num { font-family: ui-monospace, monospace; white-space: nowrap; text-align: right; }
.iis-thumb { width: 44px; height: 44px; image-rendering: pixelated; border-radius: 3px; border: 2px solid; }
.iis-bar-cell { width: 30%; }
.iis-bar { height: 12px; border-radius: 2px; }
.iis-none { opacity: 0.7; font-style: italic; }
"""


# Page-wide CSS, given to `launch` (Gradio 6 takes it there): small images fill the upload box.
APP_CSS = """
#iis-image img { width: 100%; height: 100%; object-fit: contain; }
"""


def _concept_rows(items, loaded: ThumbnailSource | None, scale: float) -> str:
    rows = []
    for c in items:
        color = POSITIVE if c.contribution >= 0 else NEGATIVE
        thumb = ""
        if c.thumbnail is not None:
            uri = loaded.thumbnail_uri(c.index, c.thumbnail) if loaded else png_data_uri(c.thumbnail)
            thumb = f'<img class="iis-thumb" style="border-color: {color}" src="{uri}" alt="source patch">'
        width = 100.0 * abs(c.contribution) / scale if scale > 0 else 0.0
        source = ""
        if c.source:
            source = "; ".join(f"{k}={v}" for k, v in c.source.items())
        rows.append(
            f'<tr class="iis-concept" data-index="{c.index}">'
            f"<td>{thumb}</td>"
            f'<td class="iis-concept-name" title="{_h(source)}">{_h(c.label)}</td>'
            f'<td class="num">{c.activation:+.3f} &times; {c.weight:+.3f}</td>'
            f'<td class="num iis-contribution">{c.contribution:+.4f}</td>'
            f'<td class="iis-bar-cell"><div class="iis-bar" style="width: {width:.1f}%; background: {color}"></div></td>'
            "</tr>"
        )
    return "".join(rows)


def _concept_table(title: str, css_class: str, items, loaded, scale: float, empty: str) -> str:
    if not items:
        return f'<h4>{title}</h4><p class="iis-none {css_class}">{empty}</p>'
    header = (
        "<tr><th></th><th>concept</th><th>activation &times; class weight</th>"
        "<th>contribution</th><th></th></tr>"
    )
    return (
        f"<h4>{title}</h4>"
        f'<table class="iis-concepts {css_class}">{header}{_concept_rows(items, loaded, scale)}</table>'
    )


def _backbone_line(explanation) -> str:
    """The backbone's own prediction, under the one from concepts (nothing without a classifier)."""
    if not explanation.backbone_predictions:
        return ""
    top = explanation.backbone_predictions[0]
    return (
        '<p class="iis-backbone">The backbone&#39;s own classifier predicts '
        f'<b class="iis-backbone-label">{_h(top["label"])}</b> with p = '
        f'<span class="iis-backbone-probability">{top["score"]:.3f}</span></p>'
    )


def explanation_html(explanation, loaded: ThumbnailSource | None = None) -> str:
    """The explanation as HTML: the prediction, then the supporting and the opposing concepts."""
    e = explanation
    supporting = [c for c in e.concepts if c.contribution >= 0]
    opposing = [c for c in e.concepts if c.contribution < 0]
    listed = sum(c.contribution for c in e.concepts)
    scale = max([abs(c.contribution) for c in e.concepts] + [0.0])
    return (
        f'<div class="iis-result" data-label="{_h(e.label)}" data-index="{e.index}" '
        f'data-ratio="{e.sparsity_ratio:g}" data-top-k="{len(e.concepts)}">'
        f'<p class="iis-headline">Predicted <b class="iis-predicted-label">{_h(e.label)}</b> '
        f'with p = <span class="iis-probability">{e.probability:.3f}</span>, from {e.num_active} of '
        f"{e.num_concepts} {_h(e.concept_kind)} concepts at sparsity "
        f'<span class="iis-ratio-value">{e.sparsity_ratio:g}</span></p>'
        + _backbone_line(e)
        + f'<p class="iis-equation">logit {e.logit:+.4f} = bias {e.bias:+.4f} + top {len(e.concepts)} concepts '
        f"{listed:+.4f} + all other concepts {e.other_contribution:+.4f}</p>"
        + _concept_table(
            "Supporting concepts",
            "iis-supporting",
            supporting,
            loaded,
            scale,
            "none of the top concepts speaks for this class",
        )
        + _concept_table(
            "Opposing concepts",
            "iis-opposing",
            opposing,
            loaded,
            scale,
            "none of the top concepts speaks against this class",
        )
        + "</div>"
    )


def explain_status(explanation) -> str:
    """One line: the prediction from concepts, and the backbone's own beside it."""
    status = (
        f"Predicted **{_md(explanation.label)}** (p = {explanation.probability:.3f}) from concepts "
        f"at sparsity {explanation.sparsity_ratio:g}"
    )
    if explanation.backbone_predictions:
        top = explanation.backbone_predictions[0]
        agree = " (the same class)" if top["label"] == explanation.label else ""
        status += f"; the backbone's own classifier predicts **{_md(top['label'])}** (p = {top['score']:.3f}){agree}"
    return status + "."


def error_message(err: BaseException) -> str:
    from iis_hf.errors import first_line

    return f"**Error:** {_md(first_line(err))}"
