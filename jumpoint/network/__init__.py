"""Network tunnels on the Jumpoint.

The decision core is sans-IO (bytes and a clock value in, decisions out):
the IPv4 parser, the flow table, the packet filter, the denial summaries.
Around it: the C{network:} settings, the inner address pool, egress (kernel
forwarding and the nftables table), the host checks, the TUN interface, and
the hub and session links that move packets between the TUN and the channel.
"""
