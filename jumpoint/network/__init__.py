"""Network tunnels on the Jumpoint: settings, inner addresses, the packet filter and egress."""
