"""HTML: the main content's headings and paragraphs, navigation and boilerplate dropped.

Parsed with selectolax's Lexbor engine (a C HTML5 parser). The main content is the page's
`<main>` (or `role="main"`), else its only `<article>`, else `<body>`; inside it navigation,
asides, forms, scripts, styles and hidden elements are dropped, and so are the page header
and footer when the content is the whole body. Block elements become paragraphs, `<h1>`-`<h6>`
headings, `<pre>` keeps its line breaks.
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser, LexborNode

from ragmeshd.documents.checks import squash
from ragmeshd.documents.sections import SectionBuilder

_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {
    "address",
    "article",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "hgroup",
    "li",
    "main",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "ul",
    "center",
}
_DROPPED = {
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "aside",
    "form",
    "iframe",
    "svg",
    "canvas",
    "button",
    "select",
    "input",
    "textarea",
    "object",
    "embed",
    "head",
    "menu",
    "dialog",
}
_DROPPED_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu"}
# Inside the whole body (no <main> or <article>), the page's own header and footer.
_PAGE_CHROME = {"header", "footer"}


def _dropped(node: LexborNode, chrome: set[str]) -> bool:
    tag = node.tag
    if tag in _DROPPED or tag in chrome:
        return True
    attributes = node.attributes
    if not attributes:
        return False
    if attributes.get("role") in _DROPPED_ROLES:
        return True
    if "hidden" in attributes or attributes.get("aria-hidden") == "true":
        return True
    style = (attributes.get("style") or "").replace(" ", "").lower()
    return "display:none" in style


def _content_root(tree: LexborHTMLParser) -> tuple[LexborNode | None, set[str]]:
    main = tree.css_first("main, [role=main]")
    if main is not None:
        return main, {"footer"}
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0], {"footer"}
    return tree.body, _PAGE_CHROME


def extract_html(text: str, fallback_title: str) -> tuple[str, SectionBuilder]:
    tree = LexborHTMLParser(text)
    title_node = tree.css_first("head > title") or tree.css_first("title")
    page_title = squash(title_node.text()) if title_node is not None else ""
    builder = SectionBuilder()
    root, chrome = _content_root(tree)
    if root is not None:
        _Walker(builder, chrome).block(root)
    return page_title or fallback_title, builder


class _Walker:
    def __init__(self, builder: SectionBuilder, chrome: set[str]) -> None:
        self._builder = builder
        self._chrome = chrome

    def block(self, node: LexborNode) -> None:
        """Emit the headings and paragraphs inside a block element; inline content between
        child blocks is a paragraph of its own."""
        inline: list[str] = []

        def flush() -> None:
            text = squash("".join(inline))
            inline.clear()
            if text:
                self._builder.paragraph(text)

        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                inline.append(child.text(deep=False))
            elif tag in ("-comment", "!--") or _dropped(child, self._chrome):
                continue
            elif tag in _HEADINGS:
                flush()
                self._builder.heading(_HEADINGS[tag], child.text(deep=True, separator=" "))
            elif tag == "pre":
                flush()
                self._builder.paragraph(child.text(deep=True).strip("\n"))
            elif tag == "br":
                inline.append("\n")
            elif tag in _BLOCKS or tag in _PAGE_CHROME or tag == "hr":
                flush()
                self.block(child)
            else:
                inline.append(self._inline(child))
        flush()

    def _inline(self, node: LexborNode) -> str:
        parts = []
        for child in node.iter(include_text=True):
            if child.tag == "-text":
                parts.append(child.text(deep=False))
            elif child.tag == "br":
                parts.append(" ")
            elif not _dropped(child, self._chrome):
                parts.append(self._inline(child))
        return "".join(parts)
