"""The commented jumpoint.yaml written by `jumpoint init`."""

from __future__ import annotations

import json


def render_config(name: str, host: str, port: int, addresses: list[str]) -> str:
    """A complete, commented configuration for a new Jumpoint."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    address_lines = "\n".join(f"    - {json.dumps(a)}" for a in addresses)
    return f"""\
# jumpoint.yaml -- configuration of the Jumpoint {name!r}.
# Check it with: jumpoint check-config --config THIS_FILE
# Unknown keys are errors; paths are relative to this file's directory.

jumpoint:
  name: {json.dumps(name)}
  # Address and port of the TLS listener consoles connect to.
  listen: {json.dumps(listen)}
  # Names and IPs consoles use to reach this Jumpoint. They are in the server
  # certificate; the first one goes into enrollment files.
  addresses:
{address_lines}

tls:
  ca_certificate: ca.pem
  ca_key: ca.key            # mode 0600; signs client certificates
  server_certificate: server.pem
  server_key: server.key    # mode 0600

# Users, certificates and revocations (SQLite; no server needed).
state_database: state.db

limits:
  max_connections_per_session: 256   # 1-256; the 257th local connection is refused
  connect_timeout: 10s               # connecting to an item's target
  handshake_timeout: 10s             # TLS handshake of a console
  keepalive_interval: 15s            # ping the console this often
  keepalive_timeout: 45s             # drop a console that stops answering
  revocation_poll_interval: 1s       # how fast `jumpoint user revoke` takes effect

# User groups. Members of "default" may open every item ("*" = all jump groups).
groups:
  default:
    comments: members may open every item
    jump_groups: ["*"]

# Jump items. A TCP tunnel item:
#
#   - name: web-prod                  # 1-128 characters, unique
#     type: tcp
#     host: web.corp.example          # the target, resolved on the Jumpoint
#     local_address: 127.0.0.5        # on the console; must be in 127.0.0.0/8
#     tunnels:                        # local_port: auto (a free port) or 1-65535
#       - {{local_port: 8080, remote_port: 80}}
#       - {{local_port: auto, remote_port: 443}}
#     jump_group: default
#     tag: web
#     comments: production web servers
#
# Only the item's host and its remote ports are reachable through the item.
items: []
"""
