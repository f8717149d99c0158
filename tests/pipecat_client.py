"""A minimal pipecat pipeline whose Deepgram STT service talks to callscribe: run under the pipecat
venv's interpreter (scripts/test.sh makes `.venv-pipecat`, since `pipecat-ai[deepgram]` pins versions
the main environment must not take), never imported by the test suite itself.

    .venv-pipecat/bin/python tests/pipecat_client.py WS_BASE_URL API_KEY WAV [--until WORD]

Feeds the WAV (mono 16-bit) in 20 ms frames, as a transport delivers them, and prints each
transcription frame that reaches the end of the pipeline as one JSON line on stdout:
{"type": "final" | "interim", "text": ...}. Ends the pipeline once a final holds WORD (or after
the timeout), and exits 0 once it has ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import wave

from pipecat.frames.frames import EndFrame, InputAudioRawFrame, InterimTranscriptionFrame, TranscriptionFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.deepgram.stt import DeepgramSTTService


class Emit(FrameProcessor):
    """Prints the transcription frames that reach it, and notes whether a final held `until`."""

    def __init__(self, until: str) -> None:
        super().__init__()
        self.until = until.lower()
        self.done = asyncio.Event()

    async def process_frame(self, frame, direction: FrameDirection) -> None:  # type: ignore[no-untyped-def]
        await super().process_frame(frame, direction)
        kind = "final" if isinstance(frame, TranscriptionFrame) else \
            "interim" if isinstance(frame, InterimTranscriptionFrame) else None
        if kind is not None:
            print(json.dumps({"type": kind, "text": frame.text}), flush=True)
            if kind == "final" and self.until and self.until in frame.text.lower():
                self.done.set()
        await self.push_frame(frame, direction)


async def run(base_url: str, api_key: str, wav_path: str, until: str, timeout_s: float) -> None:
    with wave.open(wav_path, "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    stt = DeepgramSTTService(api_key=api_key, base_url=base_url, sample_rate=rate)
    emit = Emit(until)
    task = PipelineTask(Pipeline([stt, emit]), params=PipelineParams(audio_in_sample_rate=rate))

    async def feed() -> None:
        step = rate * 2 // 50  # 20 ms of 16-bit mono
        for i in range(0, len(pcm), step):
            await task.queue_frame(InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=rate, num_channels=1))
            await asyncio.sleep(0.005)
        try:  # the last final comes after the audio: wait for it (or give up) before ending
            await asyncio.wait_for(emit.done.wait(), timeout_s)
        except asyncio.TimeoutError:
            print(f"pipecat_client: no final with {until!r} within {timeout_s:g} s", file=sys.stderr)
        await task.queue_frame(EndFrame())

    await asyncio.wait_for(asyncio.gather(PipelineRunner(handle_sigint=False).run(task), feed()), timeout_s + 30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base_url")
    p.add_argument("api_key")
    p.add_argument("wav")
    p.add_argument("--until", default="")
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args()
    try:
        asyncio.run(run(args.base_url, args.api_key, args.wav, args.until, args.timeout))
    except asyncio.TimeoutError:
        print("pipecat_client: timed out", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
