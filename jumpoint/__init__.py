"""The Jumpoint: the daemon that holds the policy, the credentials and the audit log."""

__version__ = "0.1.0"
