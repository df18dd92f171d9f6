"""Word (.docx) documents through python-docx: Heading styles become sections, the Title
style the title, tables one paragraph per row."""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from ragmeshd.documents.checks import squash
from ragmeshd.documents.model import DocumentError, SkipReason
from ragmeshd.documents.sections import SectionBuilder

_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def extract_docx(data: bytes, fallback_title: str) -> tuple[str, SectionBuilder]:
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise DocumentError(
            SkipReason.ENCRYPTED, "an encrypted (or old binary .doc) Word file, not a .docx"
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise DocumentError(SkipReason.UNREADABLE, f"not a readable .docx: {error}") from error
    builder = SectionBuilder()
    title = squash(document.core_properties.title or "")
    # Style names by id, looked up once (python-docx resolves a paragraph's style by a search
    # through the styles part on every access: 1 ms a paragraph).
    names = {style.style_id: style.name or "" for style in document.styles}
    body = document.element.body
    for child in body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(child, document)
            text = paragraph.text
            style_ids = child.xpath("./w:pPr/w:pStyle/@w:val")
            style = names.get(style_ids[0], "") if style_ids else ""
            heading = _HEADING_STYLE.match(style)
            if style == "Title":
                title = title or squash(text)
            elif heading:
                builder.heading(int(heading.group(1)), text)
            else:
                builder.paragraph(squash(text))
        elif tag == "tbl":
            table = Table(child, document)
            for row in table.rows:
                cells = [squash(cell.text) for cell in row.cells]
                builder.paragraph(" | ".join(cell for cell in cells if cell))
    return title or fallback_title, builder
