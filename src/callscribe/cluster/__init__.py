"""Cluster mode: several callscribe nodes sharing one Redis and one PostgreSQL (docs/cluster.md).

Everything here is off unless CALLSCRIBE_REDIS_URL is set; single-node code paths never import it.
Redis holds only what expires or can be remade (the call directory, node heartbeats, command
request/reply, live events); PostgreSQL holds everything durable (calls, finals, the webhook outbox).
"""
