"""Prometheus metrics, one registry per app instance (so several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge("callscribe_active_calls", "Calls with connected media", registry=r)
        self.active_legs = Gauge("callscribe_active_legs", "Legs being transcribed now", registry=r)
        self.audio_seconds = Counter("callscribe_audio_seconds_total", "Audio received, seconds", ["namespace"], registry=r)
        self.finals = Counter("callscribe_finals_total", "Final utterances emitted", registry=r)
        self.partials = Counter("callscribe_partials_total", "Partial results emitted", registry=r)
        self.partials_dropped = Counter("callscribe_partials_dropped_total", "Partials dropped or coalesced under load", registry=r)
        self.final_latency = Histogram(
            "callscribe_final_latency_seconds", "End of speech to final text",
            buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0), registry=r,
        )
        self.kvs_lag = Histogram("callscribe_kvs_millis_behind_now_seconds", "Kinesis Video pull behind the stream's head",
                                 buckets=(0.5, 1, 2, 5, 10, 30, 60, 300), registry=r)
        self.asr_queue = Gauge("callscribe_asr_queue_depth", "Jobs waiting for the model", ["kind"], registry=r)
        self.refused = Counter("callscribe_streams_refused_total", "New streams refused for lack of capacity", registry=r)
        self.asr_busy = Counter("callscribe_asr_busy_seconds_total", "Time ASR workers spent decoding, by kind",
                                ["kind"], registry=r)
        self.speculated = Counter("callscribe_finals_speculated_total",
                                  "Finals that took the result of a decode started during their endpoint silence",
                                  registry=r)
        self.admission_refused = Counter("callscribe_admission_refused_total",
                                         "New legs the ASR scheduler refused, by reason (behind, late, load)",
                                         ["reason"], registry=r)
        self.audio_dropped = Counter("callscribe_audio_dropped_seconds_total",
                                     "Audio dropped because a leg's input queue was full", registry=r)
        self.webhook_attempts = Counter("callscribe_webhook_attempts_total", "Webhook POST attempts", ["outcome"], registry=r)
        self.webhook_backlog = Gauge("callscribe_webhook_backlog", "Webhook deliveries waiting", registry=r)
        self.webhook_dead_letters = Counter("callscribe_webhook_dead_letters_total",
                                            "Webhooks set aside as dead letters", ["reason"], registry=r)
        self.webhook_dead = Gauge("callscribe_webhook_dead", "Dead-letter webhooks kept (not replayed)", registry=r)

        self.store_failures = Counter("callscribe_store_failures_total",
                                      "Call events the database could not keep", ["reason"], registry=r)
        self.store_healthy = Gauge("callscribe_store_healthy", "1 while the database takes writes", registry=r)
        self.store_healthy.set(1)
        self.retention_deleted_calls = Counter("callscribe_retention_deleted_calls_total",
                                               "Calls deleted by the retention sweep", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
