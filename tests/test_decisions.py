"""The decision log (docs/decisions.md): eight complete entries whose evidence exists in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "docs" / "decisions.md"
FIELDS = ("Decision", "Rationale", "Date", "Impact", "Evidence", "Revisit if")


def _entries(text):
    parts = re.split(r"^## (Q\d) ", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_eight_entries_in_decision_log_form():
    entries = _entries(LOG.read_text())
    assert sorted(entries) == [f"Q{i}" for i in range(1, 9)]
    for name, body in entries.items():
        missing = [field for field in FIELDS if f"**{field}" not in body]
        assert not missing, f"{name} lacks {missing}"
        assert re.search(r"\*\*Date\.\*\* 20\d\d-\d\d-\d\d", body), f"{name} has no ISO date"


def test_evidence_links_resolve():
    text = LOG.read_text()
    links = re.findall(r"\]\(([^)#\s]+)\)", text)
    tests = re.findall(r"`((?:tests|notebooks|ptycholib)/[\w/.]+\.py)::(\w+)`", text)
    assert len(links) >= 15 and len(tests) >= 25  # the log cites evidence, and this test reads it
    for link in links:
        assert not link.startswith(("http:", "https:")), link
        assert (LOG.parent / link).resolve().exists(), f"broken link {link}"
    for path, name in tests:
        source = ROOT / path
        assert source.exists(), f"missing {path}"
        assert re.search(rf"^def {name}\(", source.read_text(), flags=re.M), f"{path} has no {name}"


def test_every_entry_cites_a_runnable_test():
    for name, body in _entries(LOG.read_text()).items():
        evidence = body.split("**Evidence")[1].split("**Revisit")[0]
        assert "::test_" in evidence, f"{name} cites no test"


def test_readme_links_the_decision_log():
    assert "(docs/decisions.md)" in (ROOT / "README.md").read_text()
