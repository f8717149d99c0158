"""pipecat's Deepgram STT service against callscribe: a minimal pipeline fed a synthesised WAV, whose
transcription frames are collected. Skipped where pipecat (`pipecat-ai[deepgram]`) is not installed."""

from __future__ import annotations

import asyncio
import wave

import numpy as np
import pytest

pytest.importorskip("pipecat.services.deepgram.stt")

from pipecat.frames.frames import (EndFrame, InputAudioRawFrame, InterimTranscriptionFrame,  # noqa: E402
                                   TranscriptionFrame)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.deepgram.stt import DeepgramSTTService  # noqa: E402

from callscribe.config import load_settings  # noqa: E402
from callscribe.testing.speech import say, silence  # noqa: E402
from callscribe.testing.wav import write_wav  # noqa: E402
from servers import HANG_GUARD_S, running_app  # noqa: E402

TEXT = "Hello, I would like to book a table for two people tomorrow evening."


class Collect(FrameProcessor):
    """Keeps the transcription frames that reach the end of the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.finals: list[TranscriptionFrame] = []
        self.interims: list[InterimTranscriptionFrame] = []

    async def process_frame(self, frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            self.finals.append(frame)
        elif isinstance(frame, InterimTranscriptionFrame):
            self.interims.append(frame)
        await self.push_frame(frame, direction)


@pytest.fixture(scope="module")
def server(tmp_path_factory, engine):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), sip_port=0, api_keys="ka:sa:acme")
    with running_app(settings, engine=engine) as s:
        yield s


def test_pipecat_deepgram_stt_transcribes_a_wav(server, tmp_path):
    path = tmp_path / "booking.wav"
    write_wav(path, np.concatenate([silence(0.5), say(TEXT), silence(1.5)]), 16000)
    with wave.open(str(path), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())

    stt = DeepgramSTTService(api_key="ka:sa", base_url=server.ws_url, sample_rate=rate)
    collect = Collect()
    task = PipelineTask(Pipeline([stt, collect]), params=PipelineParams(audio_in_sample_rate=rate))

    async def feed() -> None:
        step = rate * 2 // 50  # 20 ms frames, as a transport delivers them
        for i in range(0, len(pcm), step):
            await task.queue_frame(InputAudioRawFrame(audio=pcm[i:i + step], sample_rate=rate, num_channels=1))
            await asyncio.sleep(0.005)
        for _ in range(int(HANG_GUARD_S / 0.1)):  # until the last words are in, or the guard
            if any("evening" in f.text.lower() for f in collect.finals):
                break
            await asyncio.sleep(0.1)
        await task.queue_frame(EndFrame())

    async def go() -> None:
        await asyncio.gather(PipelineRunner(handle_sigint=False).run(task), feed())

    asyncio.run(asyncio.wait_for(go(), HANG_GUARD_S))
    heard = " ".join(f.text for f in collect.finals).lower()
    assert "table" in heard and "tomorrow" in heard, heard
    assert collect.interims, "no interim transcriptions"
