"""Settings: defaults from the contract, parsing of list values, and clear errors for bad ones."""

import pytest

from callscribe.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("CALLSCRIBE_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_contract():
    s = load_settings()
    assert (s.host, s.port, s.sip_host, s.sip_port) == ("127.0.0.1", 8080, "127.0.0.1", 5060)
    assert s.rtp_port_range == (40000, 40999)
    assert s.resolved_public_url == "http://127.0.0.1:8080"
    assert s.resolved_database_url.startswith("sqlite:///") and s.resolved_database_url.endswith("callscribe-data/callscribe.db")
    assert [str(src.network) for src in s.parsed_siprec_allow] == ["127.0.0.0/8"]


def test_list_values_parse_with_tenants(monkeypatch):
    monkeypatch.setenv("CALLSCRIBE_API_KEYS", "a:s1, b:s2:acme")
    monkeypatch.setenv("CALLSCRIBE_SIPREC_ALLOW", "10.0.0.0/8=acme,192.168.1.7")
    monkeypatch.setenv("CALLSCRIBE_AUDIOHOOK_KEYS", "key1:c2VjcmV0:acme,key2:")
    s = load_settings()
    assert [(k.id, k.secret, k.tenant) for k in s.parsed_api_keys] == [("a", "s1", "default"), ("b", "s2", "acme")]
    assert [(str(x.network), x.tenant) for x in s.parsed_siprec_allow] == [("10.0.0.0/8", "acme"), ("192.168.1.7/32", "default")]
    assert [(k.api_key, k.secret, k.tenant) for k in s.parsed_audiohook_keys] == [("key1", b"secret", "acme"), ("key2", b"", "default")]


@pytest.mark.parametrize(
    "name,value,fragment",
    [
        ("CALLSCRIBE_PORT", "eighty", "CALLSCRIBE_PORT"),
        ("CALLSCRIBE_PORT", "70000", "CALLSCRIBE_PORT"),
        ("CALLSCRIBE_API_KEYS", "only-an-id", "id:secret"),
        ("CALLSCRIBE_SIPREC_ALLOW", "not-a-network", "not a CIDR"),
        ("CALLSCRIBE_RTP_PORTS", "5000-4000", "LOW <= HIGH"),
        ("CALLSCRIBE_PUBLIC_URL", "example.com", "must start with"),
        ("CALLSCRIBE_AUDIOHOOK_KEYS", "k:not base64!", "not base64"),
        ("CALLSCRIBE_COMPUTE_TYPE", "int4", "must be one of"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, name, value, fragment):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert fragment in str(err.value)
    assert "Traceback" not in str(err.value)


def test_toml_file_sets_values_and_env_wins(monkeypatch, tmp_path):
    cfg = tmp_path / "callscribe.toml"
    cfg.write_text('[callscribe]\nport = 9090\nhost = "0.0.0.0"\nwebhook_url = "http://127.0.0.1:1/hook"\n')
    monkeypatch.setenv("CALLSCRIBE_CONFIG", str(cfg))
    monkeypatch.setenv("CALLSCRIBE_PORT", "9191")
    s = load_settings()
    assert (s.host, s.port, s.webhook_url) == ("0.0.0.0", 9191, "http://127.0.0.1:1/hook")
    assert s.resolved_public_url == "http://127.0.0.1:9191"


def test_unreadable_toml_is_a_clear_error(monkeypatch, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = = 1\n")
    monkeypatch.setenv("CALLSCRIBE_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()
