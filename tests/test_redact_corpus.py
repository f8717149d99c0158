"""The redaction corpus (tests/redaction_corpus.py), one pytest case per entry."""

from __future__ import annotations

import pytest

from callscribe.redact import CallRedactor
from redaction_corpus import CASES, POLICIES, Case


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case) -> None:
    redactor = CallRedactor(POLICIES[case.policy])
    got = [redactor.redact_final(t.text, role=t.role).text for t in case.turns]
    assert got == [t.expected for t in case.turns]
