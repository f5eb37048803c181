"""The documentation stays true of the code: every setting it names exists,
README links to every page of docs/, and links to files lead to one.
(That every page renders is tests/test_rst.py's.)"""

import re
from pathlib import Path

import pytest

from spchat import config

REPO = Path(__file__).resolve().parents[1]
PAGES = ("design.rst", "operations.rst", "development.rst", "protocol.rst")
DOCUMENTS = [REPO / "README.rst", REPO / "NEWS.rst"] + [REPO / "docs" / page for page in PAGES]

# CHAT_ followed by a name (not "CHAT_..." standing for all of them).
SETTING_NAME = re.compile(r"\bCHAT_[A-Z0-9_]*[A-Z0-9]\b")
# A reST link to a local file: `text <target>`_
LOCAL_LINK = re.compile(r"`[^`<]*<([^>`:]+)>`_")


def test_every_page_exists():
    for document in DOCUMENTS:
        assert document.is_file(), f"{document.relative_to(REPO)} is missing"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_setting_the_documents_name_exists(document):
    known = {setting.env for setting in config.SETTINGS} | set(config.OBSOLETE_ENV)
    named = set(SETTING_NAME.findall(document.read_text(encoding="utf-8")))
    assert named - known == set(), f"{document.name} names settings spchat/config.py lacks"


def test_readme_links_to_every_page_of_docs():
    links = set(LOCAL_LINK.findall((REPO / "README.rst").read_text(encoding="utf-8")))
    assert {f"docs/{page}" for page in PAGES} <= links


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_to_a_file_leads_to_one(document):
    for target in LOCAL_LINK.findall(document.read_text(encoding="utf-8")):
        path = target.split("#")[0]
        assert (document.parent / path).exists(), f"{document.name} links to {target}"

