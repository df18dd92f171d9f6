"""Where the Qdrant backend keeps its documents: by default Qdrant's own engine in-process
under the state folder (issue 25); a location that is set is used as given."""

from __future__ import annotations

from pathlib import Path

from ragmeshd.search.server import qdrant_location
from ragmeshd.settings import Settings


def test_the_default_is_qdrant_edge_under_the_state_folder(tmp_path: Path) -> None:
    settings = Settings.model_validate({"state_dir": str(tmp_path)})
    assert qdrant_location(settings) == f"edge:{tmp_path / 'qdrant-edge'}"


def test_a_location_that_is_set_is_kept() -> None:
    for location in (":memory:", "/srv/qdrant", "edge:/srv/edge", "http://qdrant:6333"):
        settings = Settings.model_validate({"search": {"qdrant_location": location}})
        assert qdrant_location(settings) == location
