"""Documents as files: reading txt, md, rst, html, pdf and docx into sections, and sections
into passages.

A shared bottom package: the search server's upload RPC extracts files server-side with this
code and `ragmesh ingest` extracts them client-side with the same code, so both give the same
passages for the same bytes. It imports only third-party libraries (pypdf, selectolax,
python-docx) and never a service: token counting, which belongs to the embedding model, comes
in as a function.

- `model`: the records (Section, ExtractedDocument, Passage, Skipped).
- `limits`: the size limits a file is checked against.
- `checks`: binary and encoding checks, the content hash.
- `sections`: headings and paragraphs, as every extractor emits them, into sections.
- `text` (txt, md), `rst`, `html`, `pdf`, `docx`: one extractor per format.
- `extract`: picks the extractor by file name or content type; a bad file becomes a Skipped
  with a reason, never an exception that stops a run.
- `passages`: structure-aware splitting within the embedding model's token budget.
"""

from ragmeshd.documents.checks import content_hash
from ragmeshd.documents.extract import SUPPORTED_SUFFIXES, extract_bytes, extract_file, format_of
from ragmeshd.documents.model import ExtractedDocument, Passage, Section, Skipped, SkipReason
from ragmeshd.documents.passages import PassageBudget, split_document

__all__ = [
    "SUPPORTED_SUFFIXES",
    "ExtractedDocument",
    "Passage",
    "PassageBudget",
    "Section",
    "SkipReason",
    "Skipped",
    "content_hash",
    "extract_bytes",
    "extract_file",
    "format_of",
    "split_document",
]
