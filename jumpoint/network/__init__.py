"""The Jumpoint's decision core for network tunnels: parse, track and filter IPv4 packets.

Everything here is sans-IO: bytes and a clock value in, decisions out.  The
TUN plumbing and the channel call it; nothing here reads or writes a device.
"""
