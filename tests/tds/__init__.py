"""Test-only MS-TDS tooling: a fake SQL Server and helpers that drive real TDS clients.

Written independently of the production codec (C{shared/codecs/tds}) so that it can serve as an
oracle for it: L{tests.tds.wire} (encoders/decoders), L{tests.tds.fake_server} (the server,
also runnable as C{python -m tests.tds.fake_server}) and L{tests.tds.clients} (pytds,
pymssql, FreeTDS tsql and tedious runners).
"""
