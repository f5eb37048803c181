"""README.rst, NEWS.rst and every page in docs/ are reStructuredText that
renders without a warning: a malformed table or a broken link target is
shown to readers as an error box, or the text silently vanishes."""

import io
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.rst", ROOT / "NEWS.rst", *sorted((ROOT / "docs").glob("*.rst"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_page_renders_without_warnings(page):
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        page.read_text(encoding="utf-8"), source_path=str(page),
        settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5})
    assert warnings.getvalue() == ""
