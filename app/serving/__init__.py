"""Per-endpoint serving logic: request in, response (or stream of SSE events) out; no HTTP, no Ray."""
