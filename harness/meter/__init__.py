"""Metering of model calls: what an agent CLI asked its provider and what the call cost in tokens.

Pure parts only, for a proxy between a CLI and its provider to call as the bytes pass:
`wire` tells which API a request speaks and what it asked for, `sse` frames a byte stream into
server-sent events, `usage` reads a response's token usage without keeping the response.
"""
