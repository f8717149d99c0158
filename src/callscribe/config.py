"""Settings from the environment (CALLSCRIBE_*) and an optional TOML file.

The TOML file (path in CALLSCRIBE_CONFIG, or --config on the command line) may set the same
names, lower-case and without the prefix; the environment wins over the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(Exception):
    """A setting has a bad value; the message names the variable and says what is wrong."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    secret: str
    tenant: str = "default"


@dataclass(frozen=True)
class AudioHookKey:
    api_key: str
    secret: bytes  # base64-decoded client secret; empty means unsigned requests are allowed
    tenant: str = "default"


@dataclass(frozen=True)
class SiprecSource:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    tenant: str = "default"


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parse_api_keys(value: str) -> list[ApiKey]:
    keys = []
    items = _split_list(value)
    for n, item in enumerate(items, 1):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            # Never the item itself: it holds (part of) a secret, and this ends up on the console.
            raise ValueError(f"entry {n} of {len(items)} is not id:secret[:tenant]")
        keys.append(ApiKey(parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else "default"))
    return keys


def parse_audiohook_keys(value: str) -> list[AudioHookKey]:
    import base64
    import binascii

    keys = []
    items = _split_list(value)
    for n, item in enumerate(items, 1):
        parts = item.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"entry {n} of {len(items)} is not apikey:base64secret[:tenant]")
        try:
            secret = base64.b64decode(parts[1], validate=True) if parts[1] else b""
        except binascii.Error:
            raise ValueError(f"the secret of entry {n} is not base64") from None
        keys.append(AudioHookKey(parts[0], secret, parts[2] if len(parts) == 3 and parts[2] else "default"))
    return keys


def parse_siprec_allow(value: str) -> list[SiprecSource]:
    sources = []
    for item in _split_list(value):
        cidr, _, tenant = item.partition("=")
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not a CIDR") from exc
        sources.append(SiprecSource(network, tenant.strip() or "default"))
    return sources


def parse_port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        lo, hi = int(low), int(high if sep else low)
    except ValueError as exc:
        raise ValueError(f"expected LOW-HIGH, got {value!r}") from exc
    if not (1 <= lo <= hi <= 65535):
        raise ValueError(f"expected 1 <= LOW <= HIGH <= 65535, got {value!r}")
    return lo, hi


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the optional TOML file named by CALLSCRIBE_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None):
        super().__init__(settings_cls)
        self.data: dict[str, Any] = {}
        if path:
            try:
                with open(path, "rb") as fh:
                    raw = tomllib.load(fh)
            except OSError as exc:
                raise ConfigError(f"CALLSCRIBE_CONFIG: cannot read {path}: {exc.strerror}") from exc
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"CALLSCRIBE_CONFIG: {path} is not valid TOML: {exc}") from exc
            section = raw.get("callscribe", raw)
            self.data = {k.lower().removeprefix("callscribe_"): v for k, v in section.items()}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Every setting of the service. Names match the CALLSCRIBE_* variables in DESIGN.md."""

    model_config = SettingsConfigDict(env_prefix="CALLSCRIBE_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    data_dir: Path = Path("./callscribe-data")
    database_url: str | None = None
    api_keys: str = ""
    webhook_url: str | None = None
    webhook_secret: str | None = None
    twilio_auth_token: str | None = None
    audiohook_keys: str = ""
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=0, le=65535)
    rtp_ports: str = "40000-40999"
    siprec_allow: str = "127.0.0.0/8"
    sip_tls_port: int = Field(5061, ge=0, le=65535)  # SIP over TLS, when the certificate and key are set
    sip_tls_cert: Path | None = None
    sip_tls_key: Path | None = None
    siprec_ucid_headers: str = "X-UCID,X-Avaya-UCID,Session-ID,User-to-User"  # call identity, first present wins
    siprec_rtp_timeout_s: float = Field(30.0, gt=0)  # no RTP on any stream (not on hold) this long ends the call
    model: str | None = None
    log_level: str = "info"

    # Engine tuning (not part of the public contract; defaults are the measured best on 2 cores).
    asr_workers: int = Field(2, ge=1, le=64)
    asr_threads: int = Field(1, ge=1, le=64)
    asr_batch_size: int = Field(4, ge=1, le=64)
    asr_batch_wait_ms: int = Field(60, ge=0, le=2000)
    asr_beam_size: int = Field(1, ge=1, le=10)
    compute_type: str = "int8"
    partial_interval_ms: int = Field(1000, ge=200, le=10000)
    endpoint_silence_ms: int = Field(600, ge=100, le=5000)
    max_utterance_ms: int = Field(15000, ge=2000, le=27000)  # Whisper sees at most 30 s
    final_deadline_ms: int = Field(1500, ge=200, le=60000)

    # Control-plane limits.
    max_body_bytes: int = Field(65536, ge=1024)
    rate_limit_per_minute: int = Field(600, ge=1)
    start_wait_for_media_s: float = Field(5.0, ge=0, le=60)
    auth_failures_per_minute: int = Field(20, ge=1, le=100000)  # per source address, then 429
    metrics_token: str | None = None  # when set, /metrics wants `Authorization: Bearer <token>`
    memories_tasks_per_key: int = Field(4, ge=1, le=1000)  # running audio-stream tasks per API key

    # Amazon Connect (Kinesis Video) pulls: the first Connect audio must come within kvs_start_timeout_s
    # (else start-streaming answers 400-203); kvs_idle_timeout_s without a new fragment ends the call;
    # a connection silent for kvs_read_timeout_s is dropped and resumed.
    kvs_start_timeout_s: float = Field(10.0, gt=0, le=120)
    kvs_idle_timeout_s: float = Field(20.0, gt=0, le=3600)
    kvs_read_timeout_s: float = Field(5.0, gt=0, le=120)

    # Pre-recorded POST /v1/listen: the largest audio body, and the URL prefixes a {"url": ...}
    # body may name (comma-separated, e.g. a local file server; empty: no URLs are fetched).
    listen_max_upload_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    listen_url_prefixes: str = ""

    # Webhook retry budget: past either limit (or on a 4xx other than 408/429) a row is a dead letter.
    webhook_max_attempts: int = Field(100, ge=1, le=100000)
    webhook_max_age_s: float = Field(86400.0, ge=1, le=90 * 86400)

    # Data kept: transcripts, events and recordings of calls older than this are swept (0 = keep).
    retention_days: int = Field(7, ge=0, le=36500)
    # One WAV file's length; stays well under the 4 GiB RIFF limit at any rate up to 48 kHz.
    max_recording_s: int = Field(4 * 3600, ge=1, le=12 * 3600)

    # Media sockets: in all, per source address, and those not yet past their protocol's start
    # (unauthenticated or idle before it); and the longest one media session may last.
    max_connections: int = Field(2000, ge=1, le=1_000_000)
    max_connections_per_source: int = Field(500, ge=1, le=1_000_000)
    max_unstarted_connections: int = Field(100, ge=1, le=1_000_000)
    max_call_s: float = Field(4 * 3600.0, ge=1, le=7 * 86400)
    # WebRTC ingest (an attendee's browser or any WebRTC peer): peer connections held at once (each
    # decodes Opus in this process), the time from the offer to ICE connected, and how long a
    # connected peer may send no audio before its media is ended.
    webrtc_max_peers: int = Field(100, ge=1, le=100_000)
    webrtc_connect_timeout_s: float = Field(20.0, gt=0, le=300)
    webrtc_idle_timeout_s: float = Field(20.0, gt=0, le=3600)
    # Chime meetings end themselves (as Chime's do): after this long without attendee media (since
    # the last attendee's media ended, or since creation when nobody joined), and at most this long.
    chime_meeting_idle_s: float = Field(300.0, gt=0, le=7 * 86400)
    chime_meeting_max_s: float = Field(24 * 3600.0, gt=0, le=30 * 86400)
    # At SIGTERM: how long calls in progress get to finish their last utterances before the exit.
    drain_s: float = Field(30.0, ge=0, le=3600)

    # Cluster mode (docs/cluster.md): with a Redis URL (and a PostgreSQL database) this process is one
    # node of several. node_id names it (generated when unset); token_secret signs stream URLs on every
    # node (else one is made once and kept in Redis); cluster_ttl_s is how long a silent node's
    # directory entries live; node_max_legs (0: no cap) is the legs past which this node reports itself
    # full to URL placement and /readyz.
    redis_url: str | None = None
    node_id: str | None = None
    token_secret: str | None = None
    cluster_ttl_s: float = Field(10.0, ge=2, le=300)
    node_max_legs: int = Field(0, ge=0, le=1_000_000)

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("audiohook_keys")
    @classmethod
    def _check_audiohook_keys(cls, value: str) -> str:
        parse_audiohook_keys(value)
        return value

    @field_validator("siprec_allow")
    @classmethod
    def _check_siprec_allow(cls, value: str) -> str:
        parse_siprec_allow(value)
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _check_rtp_ports(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("public_url", "webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must start with http://, https://, ws:// or wss://")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if not str(info.data.get("database_url") or "").startswith(("postgresql", "postgres:")):
            raise ValueError("cluster mode needs a PostgreSQL CALLSCRIBE_DATABASE_URL shared by every node")
        # The address placement hands out for this node: one made up from host and port would send
        # clients and the other nodes where they cannot reach it. (Absent: public_url failed itself.)
        if "public_url" in info.data and not info.data["public_url"]:
            raise ValueError("cluster mode needs CALLSCRIBE_PUBLIC_URL, the address by which clients and the "
                             "other nodes reach this node (e.g. https://calls.example.com/n1)")
        return value

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
            raise ValueError("must be 1 to 64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("token_secret")
    @classmethod
    def _check_token_secret(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("compute_type")
    @classmethod
    def _check_compute_type(cls, value: str) -> str:
        allowed = {"int8", "int8_float32", "int8_float16", "float16", "float32", "default", "auto"}
        if value not in allowed:
            raise ValueError(f"must be one of {sorted(allowed)}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: str | None) -> str | None:
        if value:
            try:
                from standardwebhooks.webhooks import Webhook

                Webhook(value)
            except Exception:  # the library raises several kinds; its message may quote the secret
                raise ValueError("not a valid signing secret (whsec_ followed by base64)") from None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _check_metrics_token(cls, value: str | None) -> str | None:
        if value is not None and value != value.strip():
            raise ValueError("must not start or end with white space")
        return value or None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TomlSource(settings_cls, os.environ.get("CALLSCRIBE_CONFIG"))
        return (init_settings, env_settings, toml)

    # Derived values -------------------------------------------------------------------------

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def public_ws_url(self) -> str:
        """The public URL in its WebSocket form (https -> wss, http -> ws), for handed-out stream URLs."""
        url = self.resolved_public_url
        for http, ws in (("https://", "wss://"), ("http://", "ws://")):
            if url.startswith(http):
                return ws + url[len(http):]
        return url

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'callscribe.db').resolve()}"

    @property
    def cluster(self) -> bool:
        """This process is one node of a cluster (CALLSCRIBE_REDIS_URL is set)."""
        return self.redis_url is not None

    @property
    def parsed_api_keys(self) -> list[ApiKey]:
        return parse_api_keys(self.api_keys)

    @property
    def parsed_audiohook_keys(self) -> list[AudioHookKey]:
        return parse_audiohook_keys(self.audiohook_keys)

    @property
    def parsed_siprec_allow(self) -> list[SiprecSource]:
        return parse_siprec_allow(self.siprec_allow)

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        return parse_port_range(self.rtp_ports)


# Settings whose values are secrets (or may embed one): an error about them never quotes the value.
SECRET_SETTINGS = frozenset({"api_keys", "audiohook_keys", "webhook_secret", "twilio_auth_token", "metrics_token",
                             "database_url", "redis_url", "token_secret"})


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning pydantic's errors into one ConfigError naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else None
            name = "CALLSCRIBE_" + field.upper() if field else "settings"
            line = f"{name}: {err['msg']}"
            if field and field not in SECRET_SETTINGS:
                line += f" (got {err.get('input')!r})"
            lines.append(line)
        raise ConfigError("; ".join(lines)) from None

