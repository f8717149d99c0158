"""SIPREC recording server (RFC 7866): SIP signalling, SDP, RFC 7865 metadata and RTP receivers."""

from callscribe.ingest.siprec.server import SiprecServer, start

__all__ = ["SiprecServer", "start"]
