"""Redaction of card numbers and personal data in live transcripts.

`CallRedactor` (one per call, shared by its legs) turns each final into a `RedactionResult`
(masked text, masked word tokens with their timings kept, spans in the original text) and masks
partials, following a `RedactionPolicy`.

Pipeline: normalize.py turns spoken and recogniser-formatted numbers into digit runs that keep
their character offsets; cues.py finds context words; detectors.py decides what each run is;
textual.py finds emails and passwords; redactor.py carries context across turns and masks.

Masking: every letter and digit inside a redacted span becomes '#'; spaces and punctuation inside
the span are kept ("###-##-####", "#### ### ###"), so the text keeps its length and its word
boundaries and each word token can be masked on its own.
"""

from .policy import CHIME_ENTITY_MAP, ENTITY_TYPES, RedactionPolicy
from .redactor import CallRedactor, RedactionResult, Span

__all__ = ["CHIME_ENTITY_MAP", "ENTITY_TYPES", "CallRedactor", "RedactionPolicy", "RedactionResult", "Span"]
