"""The channel stack both sides run, bottom to top.

L{sockets} (TCP options of the channel socket), L{tls} (TLS 1.3 settings and
the frame-at-once TLS transport), L{frames} (the frame codec), L{mux} (streams
with per-stream credit over one connection), L{channel} (the protocol under
both ends: handshake, then the mux), L{control} (the control messages and
their schema) and L{enroll} (the one-shot enrollment exchange).  Nothing here
knows an item kind.
"""
