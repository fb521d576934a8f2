"""docs/ARCHITECTURE.md's table of topics is the contract's, so the page cannot drift."""

from __future__ import annotations

from tests.conftest import ROOT
from trapline.contracts import TOPICS
from trapline.topics_doc import BEGIN, END, topics_table


def test_the_page_holds_the_table_generated_from_topics() -> None:
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert BEGIN in page and END in page
    table = page.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == topics_table(), "run `python -m trapline.topics_doc` and paste its table into the page"
    assert all(f"/{kind}`" in table for kind in TOPICS)
