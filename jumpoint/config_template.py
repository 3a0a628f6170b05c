"""The commented jumpoint.yaml written by `jumpoint init`.

The active part is a minimal, working configuration: one group, C{default},
whose members see and open every item, and no items.  Every other section
is there as a commented-out example between a C{#>} line and a C{#<} line
(L{EXAMPLE_START}, L{EXAMPLE_END}); each line in between starts with C{"# "}
(or is C{"#"} alone), and deleting that prefix turns the example into valid
configuration.  The items example is a whole C{items:} list, so it replaces
the file's last line, C{items: []} (which stays last: tools append items
there).  The tests uncomment every example and load the result.
"""

from __future__ import annotations

import json

EXAMPLE_START = "#>"
EXAMPLE_END = "#<"

# A throwaway self-signed CA certificate (its key was discarded), only so that the
# k8s example is valid as written.
_EXAMPLE_CA_PEM = """\
-----BEGIN CERTIFICATE-----
MIIBATCBtKADAgECAgEBMAUGAytlcDAgMR4wHAYDVQQDDBVleGFtcGxlLWt1YmVy
bmV0ZXMtY2EwHhcNMjYwMTAxMDAwMDAwWhcNMzYwMTAxMDAwMDAwWjAgMR4wHAYD
VQQDDBVleGFtcGxlLWt1YmVybmV0ZXMtY2EwKjAFBgMrZXADIQAI7iZ1u64Upd+A
/ndA8K15m08pULXas2WAJhn4l6sdA6MTMBEwDwYDVR0TAQH/BAUwAwEB/zAFBgMr
ZXADQQC+ARU0CstYhzfsRk96FboeK//22Q6Cj96GFCOQ7o1b5HymPRpQc/0D/rG/
jYhSC0M/NvSPBshkdcaMsRrNWCMM
-----END CERTIFICATE-----
"""

_GROUPS = """\
# User groups. A user may be in several groups (`jumpoint user add NAME --group A
# --group B`, `jumpoint user groups NAME --group ...`); they get the union of what
# their groups allow, and for each tunnel restriction the wider group wins (a group
# without that restriction lifts it). Members of "default" may see and open every
# item ("*" = all jump groups); they may not manage console items.
groups:
  default:
    comments: members may see and open every item
    jump_groups: ["*"]
  # More groups. jump_groups is either a list (see and open those jump groups) or a
  # mapping with see / open / manage; patterns may use * and ?.
#> example: groups
#   ops:
#     comments: operations
#     jump_groups:
#       see: ["*"]                # items listed by `jump items`
#       open: [web, db]           # items that may be opened (and are seen)
#       manage: [web]             # console items that may be created, changed and deleted
#   admins:
#     comments: decide access requests (jump_policies.approved.approver_group)
#     jump_groups: {see: ["*"], open: ["*"], manage: ["*"]}
#   auditors:
#     comments: may list every item but open no tunnel
#     jump_groups: ["*"]
#     tunnels: false              # default true: members may open tunnels
#   contractors:
#     comments: web and lab items only, through restricted tunnels
#     jump_groups: [web, lab-*]
#     # Every key of tunnels_restricted is optional; one left out is not restricted.
#     tunnels_restricted:
#       local: ["8000-8999"]      # console ports the tunnels may listen on (ports, ranges)
#       remote: [80, 443]         # target ports the tunnels may reach
#       scheme: [http, https]     # tunnel schemes: the tunnel's scheme, else the one of
#                                 # its well-known remote port (22 ssh, 443 https, ...)
#       acl: [10.1.0.0/16]        # who may connect to a console that listens outside
#                                 # 127.0.0.0/8: the widest ACL members may ask for, and
#                                 # the default (with no acl at all: loopback only)
#       idle_timeout_minutes:
#         min: 15                 # the shortest idle timeout members may ask for, in
#                                 # minutes, and the one they get when nothing sets one
#       auto_close:               # bounds of the session lifetime members may ask for
#         min: 10m
#         max: 8h                 # also the lifetime when nothing else sets one
#       protocol: [tcp]           # tcp, udp or tcp-udp
#       skip_idle_timeout: false  # true: members may turn the idle timeout off
#       terminate_foreign_tunnels: false  # true: may list and close other users' sessions
#<
"""

_POLICIES = """\
# allowed_targets: the only targets this Jumpoint connects to, whatever the items
# say. Omitted, any target is allowed except the built-in default below; an empty
# list allows nothing. Host names (of targets and of entries) are resolved on the
# Jumpoint, and a target is allowed only if every address it resolves to matches
# an entry. Checked when a console creates an item or adds a tunnel, when a
# session opens, and for every connection.
# Built-in default, with or without this list: loopback (127.0.0.0/8, ::1, 0.0.0.0),
# link-local (169.254.0.0/16 -- cloud metadata at 169.254.169.254 --, fe80::/10)
# and this Jumpoint's own listener are never targets unless an entry lists them
# explicitly: an address or CIDR inside them (127.0.0.0/8:5432, 169.254.169.254:80),
# for the own listener with its port. Catch-alls (0.0.0.0/0, :443, host names) do
# not count.
#> example: allowed_targets
# allowed_targets:
#   - 10.0.0.0/8:22               # CIDR:port (a port or a range such as 8000-8100)
#   - db.corp.example:5432        # host:port
#   - :443                        # :port, any address
#   - 192.168.50.0/24             # CIDR, any port
#<

# jump_policies: when and how an item may be opened (an item's jump_policy).
#> example: jump_policies
# jump_policies:
#   business-hours:
#     comments: office hours, with a ticket, announced on a webhook
#     schedule:
#       timezone: Europe/Berlin   # an IANA time zone; windows are its wall-clock time
#       strict: true              # true: sessions are closed when their window ends;
#                                 # false: only new sessions are refused outside windows
#       windows:                  # days: mon..sun or ranges (mon-fri); end is exclusive
#         - {days: [mon-fri], start: "08:00", end: "18:00"}
#         - {days: [sat], start: "22:00", end: "02:00"}   # runs into Sunday
#     ticket_id_required: true    # `jump open ITEM --ticket ID`
#     ticket_id_pattern: "[A-Z]+-[0-9]+"   # the whole ID must match (implies required)
#     notifications:
#       webhook: https://hooks.corp.example/jumpoint   # gets a JSON POST per event
#       events: [session_start, session_end]           # the default: both
#       # secret_file: webhook.secret   # (0600) signs each POST: X-Jumpoint-Signature
#       # secret_env: JUMPOINT_WEBHOOK_SECRET   # ... or the secret from the environment
#   approved:
#     comments: every session needs an approved access request
#     approval_required: true     # users ask with `jump request ITEM --reason ... --duration 1h`
#     approver_group: admins      # members decide the requests; must be a group above
#     approval_max_duration: 8h   # the longest access a request may ask for (default 8h)
#     approval_request_timeout: 24h   # an undecided request expires then (default 24h)
#<

# session_policies: what happens during a session (an item's session_policy).
#> example: session_policies
# session_policies:
#   recorded:
#     comments: recorded, closed when idle
#     recording: true             # keep every byte of every connection (a pcap file per
#                                 # session in recordings.directory); users must consent
#                                 # (`jump open ITEM --yes`, or a question on a terminal)
#     idle_timeout: 30m           # close the session after this long without traffic
#     auto_close: 8h              # the longest a session may last
#     max_connections: 16         # concurrent connections (limits.max_connections_per_session
#                                 # is the ceiling)
#     login_timeout: 30s          # mssql, k8s: a local connection that has not logged in
#                                 # by then is closed (the default; an item's own is lower)
#     udp_idle_timeout: 60s       # udp and tcp-udp tunnel pairs: a UDP flow (one local
#                                 # client) without a datagram this long closes (default)
#     max_udp_flows: 64           # UDP flows a session carries at once (default; at most 256)
#<

# The audit log: every decision and event, in the state database (see
# `jumpoint audit`) and appended to this JSON-lines file (null: no file).
#> example: audit
# audit:
#   file: audit.jsonl             # the default
#   spool_file: audit-spool.jsonl # the default, next to the state database: events kept
#                                 # on this disk while the database cannot take them
#   spool_limit_bytes: 268435456  # the default (256 MiB); full: new sessions are refused
#<

# Session recordings (see session_policies).
#> example: recordings
# recordings:
#   directory: recordings         # the default; one pcap file per recorded session
#   buffer_limit: 8388608         # bytes queued in memory per session before packets
#                                 # are dropped (the tunnel never waits for the disk)
#<
"""

_ITEMS = """\
# Jump items. Only the item's host and its remote ports are reachable through it.
# To use the examples, uncomment them and delete the last line ("items: []").
# Credentials the Jumpoint injects (SQL Server logins, Windows/NTLM accounts,
# Kubernetes tokens or client certificates), by reference only: a file or an
# environment variable, never the secret itself. `check-config` checks that
# each file is readable and each variable is set. See docs/sql-server.md.
#
# credentials:
#   - item: sql-prod                 # by item name
#     password_file: secrets/sql-prod.password   # first line; mode 0600
#   - host: sql.corp.example         # or by host and username
#     username: report_reader
#     password_env: REPORT_READER_PASSWORD
#   - item: sql-ad
#     type: ntlm                     # Windows authentication (NTLMv2)
#     domain: CORP
#     username: svc_sql
#     password_file: secrets/svc_sql.password
#   - item: k8s-prod
#     type: token                    # a service-account bearer token
#     token_file: secrets/k8s-prod.token

# Items of kinds tcp, mssql (docs/sql-server.md) and k8s (docs/kubernetes.md)
# can be opened; network items are accepted here and listed.
#> example: items (replaces the last line, "items: []")
# items:
#   - name: web-prod              # 1-128 printable characters (NFKC), unique
#     type: tcp
#     host: web.corp.example      # the target, resolved on the Jumpoint
#     local_address: 127.0.0.5    # on the console; must be in 127.0.0.0/8
#     tunnels:                    # local_port: auto (a free port) or 1-65535
#       - {local_port: 8080, remote_port: 80}
#       - {local_port: auto, remote_port: 443, scheme: https}
#     jump_group: web             # matched against the groups' jump_groups
#     tag: web                    # names and tags: printable, in NFKC form
#     comments: production web servers   # one line, no control characters
#     jump_policy: business-hours # from jump_policies
#     session_policy: recorded    # from session_policies
#   - name: sql-prod              # a SQL Server
#     type: mssql
#     host: sql.corp.example
#     port: 1433                  # the default
#     local_port: auto
#     username: report_reader     # the SQL login
#     database: sales             # optional
#     login_timeout: 30s          # a client that has not sent its login by then is closed
#     allowed_routes: [sql-replica.corp.example:1433]   # where the server may route
#                                 # a login (Always On, Azure); default: only host:port
#     jump_group: db
#     jump_policy: approved
#   - name: k8s-prod              # a Kubernetes API server
#     type: k8s
#     url: https://k8s.corp.example:6443
#     namespace: default          # optional
#     local_port: auto
#     jump_group: k8s
#     # The cluster's CA certificates, PEM. This one is a placeholder: use the
#     # certificate-authority-data of the kubeconfig, base64-decoded.
#     ca_pem: |
{ca_pem}#   - name: lab-net               # a network tunnel: what it may reach, as filters
#     type: network
#     jump_group: lab-1
#     filters:                    # 1-50; IPv4 only
#       - ip: 10.20.0.0/24        # an address, a list a,b,c, a range a-b or a CIDR
#         protocol: tcp           # optional: an IANA keyword or number (udp, icmp, 47...)
#         ports: "22,443"         # optional, for tcp, udp, sctp, dccp, udplite
#       - ip: 10.20.1.7-10.20.1.9
#         protocol: udp
#         ports: 161
#       - 10.20.1.5/icmp          # the same as text: IP[,IP|CIDR][/PROTOCOL[/PORTS]]
#<
items: []
"""


def render_config(name: str, host: str, port: int, addresses: list[str]) -> str:
    """A complete, commented configuration for a new Jumpoint."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    address_lines = "\n".join(f"    - {json.dumps(a)}" for a in addresses)
    ca_lines = "".join(f"#       {line}\n" for line in _EXAMPLE_CA_PEM.splitlines())
    head = f"""\
# jumpoint.yaml -- configuration of the Jumpoint {name!r}.
# Check it with: jumpoint check-config --config THIS_FILE
# Unknown keys are errors; paths are relative to this file's directory.
# Commented-out examples lie between a "#>" line and a "#<" line: delete the
# "# " at the start of each line in between to use one.

jumpoint:
  name: {json.dumps(name)}
  # Address and port of the TLS listener consoles connect to.
  listen: {json.dumps(listen)}
  # Names and IPs consoles use to reach this Jumpoint. They are in the server
  # certificate; the first one goes into enrollment files.
  addresses:
{address_lines}
  # Connections that have not finished their TLS handshake: over either cap,
  # the oldest pending one is closed (keep these well under LimitNOFILE).
  max_pending_handshakes: 512
  max_pending_handshakes_per_address: 32

tls:
  ca_certificate: ca.pem
  ca_key: ca.key            # mode 0600; signs client certificates
  server_certificate: server.pem
  server_key: server.key    # mode 0600

# Users, certificates, sessions, approvals and the audit log (SQLite; no server needed).
state_database: state.db
# Several Jumpoints sharing one PostgreSQL database instead (then run `jumpoint migrate`):
# state:
#   backend: postgresql
#   dsn_file: state.dsn      # mode 0600: host=... dbname=... user=... password=...

limits:
  max_connections_per_session: 256   # 1-256; the 257th local connection is refused
  connect_timeout: 10s               # connecting to an item's target
  handshake_timeout: 10s             # TLS handshake of a console
  keepalive_interval: 15s            # ping the console this often
  keepalive_timeout: 45s             # drop a console that stops answering
  revocation_poll_interval: 1s       # how fast `jumpoint user revoke` takes effect
  reconnect_grace: 5m                # a session whose link is lost stays resumable this long

"""
    return head + _GROUPS + "\n" + _POLICIES + "\n" + _ITEMS.replace("{ca_pem}", ca_lines)
