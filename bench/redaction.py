"""Redaction quality and speed on the test corpus: `python bench/redaction.py`.

For every utterance of every case in tests/redaction_corpus.py the engine's output is compared
with the expected masking, at the word-token level (a whitespace-separated token is sensitive if
any of its letters or digits must be masked, and counts as masked if any is) and at the character
level (letters and digits). Recall is grouped by the entity the case is about; precision by the
entity the engine named for what it masked. Also prints the failing cases and the time per
utterance. A second table scores the held-out corpus (tests/redaction_heldout.py).
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from callscribe.redact import CallRedactor  # noqa: E402
from redaction_corpus import CASES, POLICIES  # noqa: E402

_TOKEN = re.compile(r"\S+")


class Tally:
    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0

    def p(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    def r(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


def fmt(x: float | None) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def span_entity_at(spans, i: int) -> str | None:
    for s in spans:
        if s.start <= i < s.end:
            return s.entity
    return None


def main() -> int:
    tok_recall: dict[str, Tally] = defaultdict(Tally)
    tok_prec: dict[str, Tally] = defaultdict(Tally)
    chr_recall: dict[str, Tally] = defaultdict(Tally)
    chr_prec: dict[str, Tally] = defaultdict(Tally)
    tok_all, chr_all = Tally(), Tally()
    failures = []
    near_miss_total = near_miss_kept = 0
    for case in CASES:
        redactor = CallRedactor(POLICIES[case.policy])
        ok = True
        for turn in case.turns:
            text, expected = turn.text, turn.expected
            res = redactor.redact_final(text, role=turn.role)
            got = res.text
            if got != expected:
                ok = False
            if len(got) != len(text):
                raise SystemExit(f"{case.id}: output length changed in mask style")
            should = [expected[i] == "#" and text[i] != "#" for i in range(len(text))]
            masked = [got[i] == "#" and text[i] != "#" for i in range(len(text))]
            for i, ch in enumerate(text):
                if not ch.isalnum():
                    continue
                label = span_entity_at(res.spans, i) or "?"
                if should[i]:
                    if masked[i]:
                        chr_recall[case.entity].tp += 1
                        chr_prec[label].tp += 1
                        chr_all.tp += 1
                    else:
                        chr_recall[case.entity].fn += 1
                        chr_all.fn += 1
                elif masked[i]:
                    chr_prec[label].fp += 1
                    chr_all.fp += 1
            for m in _TOKEN.finditer(text):
                idx = [i for i in range(m.start(), m.end()) if text[i].isalnum()]
                if not idx:
                    continue
                s = any(should[i] for i in idx)
                g = any(masked[i] for i in idx)
                label = next((span_entity_at(res.spans, i) for i in idx if masked[i]), None) or "?"
                if s and g:
                    tok_recall[case.entity].tp += 1
                    tok_prec[label].tp += 1
                    tok_all.tp += 1
                elif s:
                    tok_recall[case.entity].fn += 1
                    tok_all.fn += 1
                elif g:
                    tok_prec[label].fp += 1
                    tok_all.fp += 1
        if case.entity == "NONE":
            near_miss_total += 1
            near_miss_kept += ok
        if not ok:
            failures.append(case)

    entities = sorted(set(tok_recall) | set(tok_prec) - {"?"})
    print(f"redaction corpus: {len(CASES)} cases, {sum(len(c.turns) for c in CASES)} utterances\n")
    print(f"{'entity':22} {'tok P':>6} {'tok R':>6} {'chr P':>6} {'chr R':>6}  (tokens should/masked)")
    for e in entities:
        if e == "NONE":
            continue
        tr, tp_, cr, cp = tok_recall[e], tok_prec[e], chr_recall[e], chr_prec[e]
        print(f"{e:22} {fmt(tp_.p())} {fmt(tr.r())} {fmt(cp.p())} {fmt(cr.r())}  "
              f"({tr.tp + tr.fn}/{tp_.tp + tp_.fp})")
    print(f"{'overall':22} {fmt(tok_all.p())} {fmt(tok_all.r())} {fmt(chr_all.p())} {fmt(chr_all.r())}  "
          f"(tokens: {tok_all.tp} masked correctly, {tok_all.fp} masked wrongly, {tok_all.fn} missed)")
    print(f"\nnear misses kept intact: {near_miss_kept}/{near_miss_total}")
    print(f"cases failing: {len(failures)}")
    for case in failures:
        redactor = CallRedactor(POLICIES[case.policy])
        print(f"  {case.id} [{case.policy}]")
        for turn in case.turns:
            got = redactor.redact_final(turn.text, role=turn.role).text
            mark = "  " if got == turn.expected else "!!"
            print(f"    {mark} {turn.role}: expected {turn.expected!r}\n       {' ' * len(turn.role)}  got      {got!r}")

    # speed: the whole corpus, call by call, several rounds (the first call of the process is cold)
    t0 = time.perf_counter()
    CallRedactor(POLICIES["default"]).redact_final("cold start 4111 1111 1111 1111")
    cold = time.perf_counter() - t0
    rounds, n = 5, 0
    t0 = time.perf_counter()
    for _ in range(rounds):
        for case in CASES:
            redactor = CallRedactor(POLICIES[case.policy])
            for turn in case.turns:
                redactor.redact_final(turn.text, role=turn.role)
                n += 1
    per = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(1000):
        CallRedactor(POLICIES["default"])
    construct = (time.perf_counter() - t0) / 1000
    print(f"\nmean time per utterance (redact_final): {per * 1e3:.3f} ms over {n} utterances; "
          f"first call {cold * 1e3:.1f} ms; CallRedactor() {construct * 1e6:.1f} us")
    held_failing = heldout_table()
    return 1 if failures or held_failing else 0


def heldout_table() -> int:
    """Second table: tests/redaction_heldout.py, a corpus written without looking at the engine."""
    import redaction_heldout as h

    s = h.summary()
    print(f"\nheld-out corpus: {len(h.SNIPPETS)} snippets, {sum(len(sn.turns) for sn in h.SNIPPETS)} utterances "
          f"({s['adjusted']} run with EMAIL or DOB switched on)\n")
    print(f"{'kind':10} {'passed':>8} {'digits leaked':>14} {'chars leaked':>13} {'near-miss masked':>17}")
    for kind, row in sorted(s["by_kind"].items()) + [("overall", s)]:
        print(f"{kind:10} {row['passed']:>4}/{row['snippets']:<3} {row['digits_leaked']:>7}/{row['digits']:<6} "
              f"{row['sens_leaked']:>6}/{row['sens']:<6} {row['keep_masked']:>8}/{row['keep']}")
    return s["snippets"] - s["passed"]

if __name__ == "__main__":
    raise SystemExit(main())
