"""A tiny BEIR-format dataset written on demand: twelve short abstracts on distinct topics,
eight judged queries (one with two relevant documents, one judged 0 that must be dropped)
and one query without any judgement.

Each query's content words occur in its relevant documents and in no other one, so exact
BM25 must rank a relevant document first; the dense scores are whatever the model says.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = {
    "d01": (
        "Honey bees",
        "Worker honey bees perform a waggle dance to tell the hive where"
        " flowers with nectar can be found.",
    ),
    "d02": (
        "Volcanoes",
        "Basaltic lava from shield volcanoes flows far because it is hot and has little silica.",
    ),
    "d03": (
        "Sourdough",
        "A sourdough starter is a culture of wild yeast and lactobacilli that"
        " leavens bread and gives it a sour taste.",
    ),
    "d04": (
        "Tides",
        "Ocean tides rise and fall twice a day, pulled mainly by the gravity of the moon.",
    ),
    "d05": (
        "Penicillin",
        "Alexander Fleming noticed in 1928 that a mould killed the"
        " staphylococcus colonies around it; the mould made penicillin.",
    ),
    "d06": (
        "Chess openings",
        "The Sicilian Defence answers the king's pawn opening with the"
        " c-pawn and leads to sharp, unbalanced games.",
    ),
    "d07": (
        "Glaciers",
        "Alpine glaciers carve U-shaped valleys as the moving ice grinds the bedrock beneath it.",
    ),
    "d08": (
        "Octopus",
        "An octopus changes the colour of its skin within a fraction of a"
        " second using pigment cells called chromatophores.",
    ),
    "d09": (
        "Espresso",
        "Espresso is brewed by forcing hot water through finely ground coffee"
        " at about nine bars of pressure.",
    ),
    "d10": (
        "Antibiotic resistance",
        "Bacteria that survive an antibiotic such as penicillin"
        " pass resistance genes on, so staphylococcus infections grow harder to treat.",
    ),
    "d11": (
        "Bicycles",
        "A derailleur moves the bicycle chain between sprockets so that a rider"
        " can change gear while pedalling.",
    ),
    "d12": (
        "Lighthouses",
        "The Fresnel lens let a lighthouse lamp shine many kilometres out to"
        " sea with a small flame.",
    ),
}
QUERIES = {
    "q1": "waggle dance of worker bees",
    "q2": "basaltic lava silica",
    "q3": "sourdough starter wild yeast",
    "q4": "staphylococcus penicillin",
    "q5": "chromatophores skin colour",
    "q6": "derailleur sprockets gear",
    "q7": "Fresnel lens lighthouse",
    "q8": "espresso pressure",
    "q9": "a query nobody judged",
}
# (query, document, relevance). q4 has two relevant documents; q8's only judgement is 0.
QRELS = [
    ("q1", "d01", 1),
    ("q2", "d02", 1),
    ("q3", "d03", 1),
    ("q4", "d05", 1),
    ("q4", "d10", 2),
    ("q5", "d08", 1),
    ("q6", "d11", 1),
    ("q7", "d12", 1),
    ("q8", "d09", 0),
    ("q1", "no-such-document", 1),
]
# The queries load_beir keeps: judged relevant (score > 0) to a document of the corpus.
JUDGED = {"q1", "q2", "q3", "q4", "q5", "q6", "q7"}


def write_tiny_beir(directory: Path, split: str = "test") -> Path:
    """The dataset in BEIR's layout under `directory` (created); returns `directory`."""
    (directory / "qrels").mkdir(parents=True, exist_ok=True)
    with (directory / "corpus.jsonl").open("w") as corpus:
        for document_id, (title, text) in CORPUS.items():
            corpus.write(json.dumps({"_id": document_id, "title": title, "text": text}) + "\n")
    with (directory / "queries.jsonl").open("w") as queries:
        for query_id, text in QUERIES.items():
            queries.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in QRELS)]
    (directory / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory
