"""The audit's report.html: counts and thresholds, then each finding with its thumbnails side by side."""

from __future__ import annotations

import base64
import html
import io
import os

import pandas as pd

from tltool.files import write_atomic

SHOWN = 60  # rows of each finding with thumbnails; the CSV files hold every one
THUMBNAIL = 96


def write_page(path: str, title: str, root: str, counts: list[tuple[str, str]], sections: list) -> None:
    """`sections`: (heading, table, the columns holding image paths, text for an empty table)."""
    out = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px;font-size:13px;vertical-align:top}"
           "img{display:block}</style>", f"<h1>{html.escape(title)}</h1><ul>"]
    out += [f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in counts]
    out.append("</ul>")
    for heading, table, image_columns, empty in sections:
        out.append(f"<h2>{html.escape(heading)} ({len(table)})</h2>")
        out.append(_table(table, image_columns, root) if len(table) else f"<p>{html.escape(empty)}</p>")
        if len(table) > SHOWN:
            out.append(f"<p>... and {len(table) - SHOWN} more in the CSV file.</p>")
    write_atomic(path, "\n".join(out) + "\n")


def _table(table: pd.DataFrame, image_columns: list[str], root: str) -> str:
    shown = table.head(SHOWN)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*(f"{c} image" for c in image_columns), *shown.columns])
    rows = []
    for _, row in shown.iterrows():
        cells = [f"<td>{_thumbnail(os.path.join(root, row[c]))}</td>" for c in image_columns]
        cells += [f"<td>{html.escape(str(v))}</td>" for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>" + "".join(rows) + "</table>"


def _thumbnail(path: str) -> str:
    from PIL import Image

    from tltool.data.images import ImageError, load_image

    try:
        picture = Image.fromarray(load_image(path, (THUMBNAIL, THUMBNAIL)))
    except ImageError as e:
        return html.escape(f"cannot show: {e}")
    picture.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}'>"
