"""Silero VAD v6 (the ONNX model that ships inside faster-whisper), streamed frame by frame.

One onnxruntime session per process (1 intra-op thread) serves every leg; each leg carries its own
LSTM state and 64-sample context in a `VadStream`. The model treats the batch axis as time, so all
complete 512-sample frames of a feed run in one session call with the state carried across them.
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

FRAME = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64


@functools.lru_cache(maxsize=1)
def _session():
    import onnxruntime
    from faster_whisper.utils import get_assets_path

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = False
    opts.log_severity_level = 4
    path = os.path.join(get_assets_path(), "silero_vad_v6.onnx")
    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"], sess_options=opts)


class VadStream:
    """Speech probabilities for consecutive 32 ms frames of one 16 kHz float32 stream."""

    def __init__(self) -> None:
        self._session = _session()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far (after a discontinuity)."""
        with self._lock:
            self._h = np.zeros((1, 1, 128), dtype=np.float32)
            self._c = np.zeros((1, 1, 128), dtype=np.float32)
            self._context = np.zeros(CONTEXT, dtype=np.float32)

    def process(self, frames: np.ndarray) -> np.ndarray:
        """`frames` has a multiple of 512 samples; returns one probability per 512-sample frame."""
        n = len(frames) // FRAME
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            x = frames[: n * FRAME].reshape(n, FRAME)
            ctx = np.empty((n, CONTEXT), dtype=np.float32)
            ctx[0] = self._context
            ctx[1:] = x[:-1, -CONTEXT:]
            batch = np.concatenate([ctx, x], axis=1)
            probs, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
            self._context = x[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)
