"""Extraction of each format from real files into titled sections, and bad files into skip
reasons (never exceptions)."""

from __future__ import annotations

from pathlib import Path

from ragmeshd.documents import (
    ExtractedDocument,
    Skipped,
    SkipReason,
    content_hash,
    extract_bytes,
    extract_file,
    format_of,
)
from ragmeshd.documents.limits import Limits
from tests.unit.documents.conftest import write_docx, write_pdf, write_scanned_pdf


def extracted(path: Path, limits: Limits | None = None) -> ExtractedDocument:
    document = extract_file(path, limits)
    assert isinstance(document, ExtractedDocument), document
    return document


def skipped(path: Path, limits: Limits | None = None) -> Skipped:
    result = extract_file(path, limits)
    assert isinstance(result, Skipped), result
    return result


def by_path(document: ExtractedDocument) -> dict[tuple[str, ...], str]:
    return {section.headings: section.text for section in document.sections}


def test_markdown_headings_become_the_section_path_and_the_single_h1_the_title(
    tmp_path: Path,
) -> None:
    path = tmp_path / "guide.md"
    path.write_text(
        "---\ntitle: From front matter\n---\n"
        "Intro before any heading.\n\n"
        "# Kayak guide\n\n"
        "Read this [first](http://x/first) ![a boat](boat.png).\n\n"
        "## Install\n\nUnpack it.\nThen inflate it.\n\n"
        "### On Linux\n\n```sh\nmake up\n\n# a comment, not a heading\n```\n\n"
        "Setext level two\n----------------\n\nBody.\n\n"
        "<!-- hidden -->\n[ref]: http://example.com\n",
        encoding="utf-8",
    )
    document = extracted(path)
    assert document.format == "md"
    assert document.title == "Kayak guide"
    sections = by_path(document)
    assert sections[()] == "Intro before any heading.\n\nRead this first a boat."
    assert sections[("Install",)] == "Unpack it. Then inflate it."
    assert sections[("Install", "On Linux")] == "make up\n# a comment, not a heading"
    assert sections[("Setext level two",)] == "Body."
    assert "hidden" not in str(sections) and "example.com" not in str(sections)


def test_markdown_without_a_single_top_heading_takes_the_front_matter_title(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.markdown"
    path.write_text("---\ntitle: 'Trip notes'\n---\n## Day 1\n\nRain.\n\n## Day 2\n\nSun.\n")
    document = extracted(path)
    assert document.title == "Trip notes"
    assert by_path(document) == {("Day 1",): "Rain.", ("Day 2",): "Sun."}


def test_rst_sections_by_adornment_style_with_directives_dropped(tmp_path: Path) -> None:
    path = tmp_path / "manual.rst"
    path.write_text(
        "==========\nThe Manual\n==========\n\n"
        "Overview text with a :ref:`role <target>` and ``literal``.\n\n"
        "Install\n=======\n\nRun the installer.\n\n"
        ".. image:: picture.png\n   :alt: hidden alt\n\n"
        ".. note::\n\n   Keep the key safe.\n\n"
        "Upgrades\n--------\n\nBack up first.\n\n"
        ".. this is a comment\n   spanning lines\n\n"
        "Usage\n=====\n\nCall it.\n",
        encoding="utf-8",
    )
    document = extracted(path)
    assert document.title == "The Manual"
    sections = by_path(document)
    assert sections[()] == "Overview text with a role and literal."
    assert sections[("Install",)] == "Run the installer.\n\nKeep the key safe."
    assert sections[("Install", "Upgrades")] == "Back up first."
    assert sections[("Usage",)] == "Call it."
    assert "hidden alt" not in str(sections) and "comment" not in str(sections)


def test_plain_text_paragraphs_and_encodings(tmp_path: Path) -> None:
    path = tmp_path / "todo.txt"
    path.write_bytes("Caf\xe9 list\r\nline two\r\n\r\n\r\nSecond paragraph.".encode("cp1252"))
    document = extracted(path)
    assert document.title == "todo"
    assert document.sections[0].text == "Café list line two\n\nSecond paragraph."
    utf16 = tmp_path / "wide.txt"
    utf16.write_text("Ünïcode text", encoding="utf-16")
    assert extracted(utf16).sections[0].text == "Ünïcode text"


def test_html_keeps_main_content_and_headings_drops_navigation_and_boilerplate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>Page title</title><style>p{}</style></head><body>"
        "<header><a href='/'>Home</a> Site banner</header>"
        "<nav><ul><li>Menu item</li></ul></nav>"
        "<div role='navigation'>Breadcrumbs</div>"
        "<main><h1>Glacier travel</h1><p>Rope up on <b>every</b> glacier.<br>Always.</p>"
        "<h2>Crevasses</h2><ul><li>Probe snow bridges.</li><li><p>Cross at right angles.</p>"
        "</li></ul><pre>knot:\n  figure eight</pre>"
        "<aside>Related posts</aside><div hidden>secret</div>"
        "<script>var tracking = 1;</script><footer>Article footer</footer></main>"
        "<footer>Copyright and cookie policy</footer></body></html>",
        encoding="utf-8",
    )
    document = extracted(path)
    assert document.title == "Glacier travel"
    sections = by_path(document)
    assert sections[()] == "Rope up on every glacier. Always."
    assert sections[("Crevasses",)] == (
        "Probe snow bridges.\n\nCross at right angles.\n\nknot:\n  figure eight"
    )
    for boilerplate in (
        "Menu",
        "banner",
        "Breadcrumbs",
        "Related",
        "secret",
        "tracking",
        "footer",
        "Copyright",
        "Home",
    ):
        assert boilerplate not in str(sections), boilerplate


def test_html_without_main_uses_the_body_without_page_header_and_footer(tmp_path: Path) -> None:
    path = tmp_path / "plain.htm"
    path.write_text(
        "<body><header>Logo</header><h2>One</h2><div>text one<p>para</p>tail</div>"
        "<h2>Two</h2><table><tr><td>a</td><td>b</td></tr></table><footer>Foot</footer></body>"
    )
    document = extracted(path)
    assert document.title == "plain"
    assert by_path(document) == {("One",): "text one\n\npara\n\ntail", ("Two",): "a\n\nb"}


def test_pdf_pages_and_outline_sections(tmp_path: Path) -> None:
    path = write_pdf(
        tmp_path / "report.pdf",
        ["Avalanche risk rises after heavy snowfall.", "Still about risk.", "Carry a beacon."],
        headings=["Risk", "", "Equipment"],
        title="Winter report",
    )
    document = extracted(path)
    assert document.format == "pdf"
    assert document.title == "Winter report"
    assert document.page_count == 3
    pages = [(section.page, section.headings, section.text) for section in document.sections]
    assert pages == [
        (1, ("Risk",), "Risk Avalanche risk rises after heavy snowfall."),
        (2, ("Risk",), "Still about risk."),
        (3, ("Equipment",), "Equipment Carry a beacon."),
    ]


def test_pdf_without_text_layer_is_skipped_as_such(tmp_path: Path) -> None:
    path = write_scanned_pdf(tmp_path / "scan.pdf", tmp_path / "scan.png")
    result = skipped(path)
    assert result.reason is SkipReason.NO_TEXT_LAYER
    assert "2 pages" in result.detail


def test_corrupt_pdf_is_unreadable(tmp_path: Path) -> None:
    good = write_pdf(tmp_path / "good.pdf", ["Some text."]).read_bytes()
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(good[: len(good) // 3])
    assert skipped(broken).reason in (SkipReason.UNREADABLE, SkipReason.NO_TEXT_LAYER)
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    assert skipped(garbage).reason is SkipReason.UNREADABLE


def test_encrypted_pdf_is_skipped_but_an_empty_user_password_opens(tmp_path: Path) -> None:
    locked = write_pdf(tmp_path / "locked.pdf", ["Secret plans."], password="hunter2")
    result = skipped(locked)
    assert result.reason is SkipReason.ENCRYPTED
    assert str(result).endswith("encrypted (needs a password)")
    open_pdf = write_pdf(tmp_path / "owner-only.pdf", ["Readable plans."], password="")
    assert extracted(open_pdf).sections[0].text == "Readable plans."


def test_docx_headings_title_and_tables(tmp_path: Path) -> None:
    document = extracted(write_docx(tmp_path / "manual.docx"))
    assert document.format == "docx"
    assert document.title == "Field Manual"
    assert by_path(document) == {
        ("Setup",): "Unpack the kayak and inflate the chambers in order.",
        ("Paddling", "Strokes"): "The sweep stroke turns the boat without losing speed."
        "\n\nwind | stay ashore above force five",
    }


def test_binary_empty_oversized_unsupported_and_missing_files_are_skipped(
    tmp_path: Path,
) -> None:
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert skipped(binary).reason is SkipReason.BINARY
    control = tmp_path / "data.md"
    control.write_bytes(bytes(range(1, 32)) * 100)
    assert skipped(control).reason is SkipReason.BINARY
    empty = tmp_path / "empty.md"
    empty.write_text("  \n\n ")
    assert skipped(empty).reason is SkipReason.EMPTY
    only_markup = tmp_path / "blank.html"
    only_markup.write_text("<html><body><nav>menu</nav><script>x</script></body></html>")
    assert skipped(only_markup).reason is SkipReason.EMPTY
    big = tmp_path / "big.txt"
    big.write_text("word " * 300)
    result = skipped(big, Limits(max_bytes=1000))
    assert result.reason is SkipReason.TOO_LARGE and "limit" in result.detail
    wordy = tmp_path / "wordy.txt"
    wordy.write_text("word " * 300)
    assert skipped(wordy, Limits(max_text_chars=100)).reason is SkipReason.TOO_LARGE
    image = tmp_path / "picture.png"
    image.write_bytes(b"\x89PNG")
    assert skipped(image).reason is SkipReason.UNSUPPORTED
    assert skipped(tmp_path / "missing.md").reason is SkipReason.UNREADABLE
    assert skipped(tmp_path).reason is SkipReason.UNREADABLE  # a folder


def test_upload_bytes_take_their_format_from_the_content_type_or_the_pdf_magic(
    tmp_path: Path,
) -> None:
    pdf = write_pdf(tmp_path / "x.pdf", ["Magic."]).read_bytes()
    assert format_of("upload", "application/octet-stream", pdf[:8]) == "pdf"
    assert format_of("notes", "text/markdown; charset=utf-8") == "md"
    assert format_of("README.MD") == "md"
    assert format_of("blob", "application/octet-stream", b"\x00\x01") is None
    document = extract_bytes("notes", b"# T\n\n## A\n\nb", "text/markdown")
    assert isinstance(document, ExtractedDocument) and document.title == "T"


def test_content_hash_is_the_sha256_of_the_bytes() -> None:
    assert content_hash(b"") == ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert content_hash(b"a") != content_hash(b"b")
