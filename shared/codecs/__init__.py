"""Sans-IO codecs of the protocols the tunnels carry: TDS (SQL Server) and HTTP/1.1."""
