"""Sans-IO codecs of MS-TDS, the SQL Server wire protocol, for the credential-injection proxy.

Nothing in this package does I/O.  The modules turn bytes into values and
values into bytes, with explicit size limits, and raise L{packets.TdsError}
(with a C{reason}) for any malformed input:

  - L{packets}: the 8-byte packet header, an incremental packet parser, message
    reassembly by EOM and message splitting;
  - L{prelogin}: the PRELOGIN option table and the encryption negotiation;
  - L{login7}: LOGIN7 decoding, password de-obfuscation and the rewrite that
    strips the client's credentials and injects the real ones;
  - L{tokens}: the server tokens the proxy builds (ERROR, LOGINACK, DONE,
    ENVCHANGE) and a scanner of login responses;
  - L{requests}: the audit view of client SQL batches and RPC requests;
  - L{tls}: TLS carried inside TDS (handshake in PRELOGIN packets, TDS 8.0
    strict mode) on a pyOpenSSL memory BIO.

Byte layouts follow MS-TDS (learn.microsoft.com/openspecs/windows_protocols/ms-tds);
section numbers such as "2.2.6.4" in the docstrings refer to that specification.
"""
