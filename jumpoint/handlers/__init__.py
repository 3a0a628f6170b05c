"""The Jumpoint's answers to the console's control requests, one module per concern.

L{jumpoint.handlers.dispatch} holds the typed table from a request type to
its handler and the one entry point the channel calls (checks, the group
rule, the audit of every denial); the handlers are in
L{jumpoint.handlers.item_requests} (list, show, create, change, delete),
L{jumpoint.handlers.session_requests} (open, report bindings, close, list)
and L{jumpoint.handlers.approval_requests} (request, list, approve or deny).
They see the channel and the daemon through the protocols of
L{jumpoint.handlers.request_context}, so nothing here imports the channel's
module.
"""
