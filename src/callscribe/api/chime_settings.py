"""StartMeetingTranscription's `TranscriptionConfiguration` in callscribe's terms (§C.1).

`EngineTranscribeSettings` (already checked against the model's shapes) becomes `MeetingTranscription`:
the language, partial-result stabilisation, and the redaction mode and policy.

- ContentRedactionType=PII: finals and partials are redacted before they leave the registry; each
  entity reads "[PII]" in the transcript and in its item, and is listed in `entities`.
- ContentIdentificationType=PII: the transcript is kept as said and each entity is listed in
  `entities` with its Chime type (CREDIT_DEBIT_NUMBER, ...). Stored finals keep both forms.
- PiiEntityTypes narrows either to some types (ALL or omitted: every type callscribe detects;
  NAME and ADDRESS are accepted and detect nothing: no named-entity recogniser ships).

What cannot be combined is refused with BadRequestException at once (rather than Chime's later
TranscriptFailed: the client is still on the line to be told): both Content*Type fields,
PiiEntityTypes without one, LanguageCode with IdentifyLanguage, neither of them, LanguageOptions or
PreferredLanguage without IdentifyLanguage, a PreferredLanguage not among the options, redaction or a
custom language model with IdentifyLanguage, PartialResultsStability without stabilisation.
EngineTranscribeMedicalSettings is refused: callscribe has no medical model.

A language the engine does not serve is not refused here: the HTTP call succeeds and the meeting
gets a TranscriptFailed event (as Chime does when Transcribe refuses). So do custom vocabularies,
vocabulary filters and language models (`unsupported`), which callscribe does not have: for a
vocabulary, filter or model that does not exist, Transcribe answers BadRequestException, and §C.1
says Chime turns Transcribe's BadRequestException into a TranscriptFailed event after a successful
call; every name is unknown here, so the meeting fails instead of reporting started while ignoring them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from callscribe.api.errors import ApiError
from callscribe.calls.leg import StreamParams
from callscribe.redact import RedactionPolicy

STABILITY_LEVELS = {"high": 1, "medium": 2, "low": 3}  # partials a word must survive to be stable
CUSTOMISATIONS = ("VocabularyName", "VocabularyNames", "VocabularyFilterName", "VocabularyFilterNames",
                  "VocabularyFilterMethod", "LanguageModelName")  # accepted by the model, not served here


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequestException", message)


@dataclass(frozen=True)
class MeetingTranscription:
    language: str
    configuration: dict[str, Any]  # as the client gave it (kept, and echoed in status events)
    region: str | None = None
    stabilize: bool = False
    stability: str = "high"
    content_redaction: bool = False
    content_identification: bool = False
    pii_entity_types: str | None = None
    identify_language: bool = False
    unsupported: tuple[str, ...] = ()  # CUSTOMISATIONS the configuration asks for

    def unsupported_message(self) -> str | None:
        """The TranscriptFailed message for a configuration with customisations, else None."""
        if not self.unsupported:
            return None
        return ("BadRequestException: " + ", ".join(self.unsupported) + " is not supported: this server has no "
                "custom vocabularies, vocabulary filters or custom language models")

    @property
    def configuration_json(self) -> str:
        return json.dumps(self.configuration, separators=(",", ":"), sort_keys=True)

    @property
    def stable_after(self) -> int:
        return STABILITY_LEVELS.get(self.stability, 1)

    def policy(self) -> RedactionPolicy | None:
        return RedactionPolicy.from_chime("PII" if self.content_redaction else None,
                                          "PII" if self.content_identification else None, self.pii_entity_types)

    def stream_params(self, meeting_id: str) -> StreamParams:
        mode = ("redacted" if self.content_redaction else
                "redacted_and_unredacted" if self.content_identification else "unredacted")
        return StreamParams(
            language=self.language, detailed_token=True, redaction_output=mode, smart_formatting=True,
            partials=True, surface="chime", redaction_policy=self.policy(),
            options={"meeting_id": meeting_id, "transcription_configuration": self.configuration_json})


def parse_configuration(config: dict[str, Any]) -> MeetingTranscription:
    """The meeting transcription a (model-valid) TranscriptionConfiguration asks for, or ApiError 400."""
    engine, medical = config.get("EngineTranscribeSettings"), config.get("EngineTranscribeMedicalSettings")
    if engine is not None and medical is not None:
        raise _bad("TranscriptionConfiguration must contain exactly one of EngineTranscribeSettings and "
                   "EngineTranscribeMedicalSettings")
    if medical is not None:
        raise _bad("EngineTranscribeMedicalSettings is not supported: this server has no medical transcription "
                   "model; use EngineTranscribeSettings")
    if engine is None:
        raise _bad("TranscriptionConfiguration must contain EngineTranscribeSettings")
    s: dict[str, Any] = engine
    identify = bool(s.get("IdentifyLanguage"))
    if s.get("ContentIdentificationType") and s.get("ContentRedactionType"):
        raise _bad("ContentIdentificationType and ContentRedactionType cannot be combined")
    if s.get("PiiEntityTypes") and not (s.get("ContentIdentificationType") or s.get("ContentRedactionType")):
        raise _bad("PiiEntityTypes requires ContentIdentificationType or ContentRedactionType")
    if s.get("PartialResultsStability") and not s.get("EnablePartialResultsStabilization"):
        raise _bad("PartialResultsStability requires EnablePartialResultsStabilization")
    if identify:
        if s.get("LanguageCode"):
            raise _bad("LanguageCode cannot be combined with IdentifyLanguage")
        if s.get("ContentIdentificationType") or s.get("ContentRedactionType"):
            raise _bad("Content identification and redaction cannot be combined with IdentifyLanguage")
        if s.get("LanguageModelName"):
            raise _bad("LanguageModelName cannot be combined with IdentifyLanguage")
        options = [o for o in str(s.get("LanguageOptions") or "").split(",") if o]
        if len(options) < 2:
            raise _bad("IdentifyLanguage requires LanguageOptions with at least two language codes")
        preferred = s.get("PreferredLanguage")
        if preferred and preferred not in options:
            raise _bad("PreferredLanguage must be one of LanguageOptions")
        # One English model: the meeting is transcribed in the first English option, else fails later.
        language = next((o for o in ([preferred] if preferred else []) + options if o.lower().startswith("en")),
                        preferred or options[0])
    else:
        if not s.get("LanguageCode"):
            raise _bad("EngineTranscribeSettings requires LanguageCode or IdentifyLanguage")
        for name in ("LanguageOptions", "PreferredLanguage", "VocabularyNames", "VocabularyFilterNames"):
            if s.get(name):
                raise _bad(f"{name} requires IdentifyLanguage")
        language = s["LanguageCode"]
    if s.get("PiiEntityTypes"):
        try:
            RedactionPolicy.from_chime(s.get("ContentRedactionType"), s.get("ContentIdentificationType"),
                                       s["PiiEntityTypes"])
        except ValueError as exc:
            raise _bad(f"PiiEntityTypes: {exc}") from None
    region = s.get("Region")
    return MeetingTranscription(
        language=language, configuration={"EngineTranscribeSettings": s},
        region=None if region in (None, "auto") else region,
        stabilize=bool(s.get("EnablePartialResultsStabilization")), stability=s.get("PartialResultsStability") or "high",
        content_redaction=bool(s.get("ContentRedactionType")), content_identification=bool(s.get("ContentIdentificationType")),
        pii_entity_types=s.get("PiiEntityTypes"), identify_language=identify,
        unsupported=tuple(name for name in CUSTOMISATIONS if s.get(name)))
