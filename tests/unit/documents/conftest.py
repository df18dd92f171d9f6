"""Real files for the extraction tests, written with the libraries people write them with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from ragmeshd.models import packaged_model_path


@pytest.fixture(scope="session")
def count_tokens() -> Callable[[str], int]:
    """The embedding model's own token count (as the search server's splitter counts)."""
    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def write_pdf(
    path: Path,
    pages: list[str],
    *,
    headings: list[str] | None = None,
    title: str | None = None,
    password: str | None = None,
) -> Path:
    """A PDF with a text layer: one page per item of `pages`; `headings[i]` starts page i as a
    bookmarked section (the PDF's outline)."""
    from fpdf import FPDF

    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if password is not None:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    for number, text in enumerate(pages):
        pdf.add_page()
        if headings and headings[number]:
            pdf.set_font("helvetica", "B", 14)
            pdf.start_section(headings[number])
            pdf.multi_cell(0, 8, headings[number], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def write_scanned_pdf(path: Path, image_path: Path) -> Path:
    """A scan: every page is an image of text, with no text layer."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (600, 200), "white")
    ImageDraw.Draw(image).text((20, 80), "This text is only pixels", fill="black")
    image.save(image_path)
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.image(str(image_path), x=10, y=10, w=180)
    pdf.output(str(path))
    return path


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_paragraph("Field Manual", style="Title")
    document.add_heading("Setup", level=1)
    document.add_paragraph("Unpack the kayak and inflate the chambers in order.")
    document.add_heading("Paddling", level=1)
    document.add_heading("Strokes", level=2)
    document.add_paragraph("The sweep stroke turns the boat without losing speed.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "wind"
    table.rows[0].cells[1].text = "stay ashore above force five"
    document.save(str(path))
    return path
