"""Credentials in URLs never reach the log: the server logs stream URLs with their query strings."""

import logging

from callscribe import logsafe


def test_uvicorn_lines_lose_tokens_and_secrets(caplog):
    logsafe.install()
    logsafe.install()  # idempotent: one filter per logger
    caplog.set_level(logging.INFO)
    # uvicorn's own logging config turns propagation off on its loggers: listen on them directly.
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.access")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
        logger.setLevel(logging.INFO)
    # The exact formats uvicorn uses for a WebSocket upgrade and an HTTP request.
    logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000",
                                            "/mg-autotranscribe/v1/twilio-media?token=eyJhbGc.payload.sig")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                                             "/v1/calls/CA1/events?since=3&apiId=k&apiSecret=hunter2", "1.1", 101)
    for logger in loggers:
        logger.removeHandler(caplog.handler)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "eyJhbGc" not in text and "hunter2" not in text
    assert "token=…" in text and "apiSecret=…" in text and "since=3" in text and "apiId=k" in text
    assert sum(isinstance(f, logsafe.SecretFilter) for f in logging.getLogger("uvicorn.error").filters) == 1


def test_scrub_leaves_ordinary_text_alone():
    assert logsafe.scrub("token bucket refilled; 3 tokens left") == "token bucket refilled; 3 tokens left"
    assert logsafe.scrub("wss://h/x?a=1&token=abc&b=2") == "wss://h/x?a=1&token=…&b=2"


def test_configured_urls_are_logged_without_credentials():
    assert logsafe.url_for_log("https://user:s3cret@hooks.example:8443/in?key=s3cret") == "https://hooks.example:8443/in?…"
    assert logsafe.url_for_log("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
