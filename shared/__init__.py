"""Code both sides use: wire protocol, multiplexer, config schema, errors."""
