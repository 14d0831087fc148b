"""pipemail: small Unix commands for email from the shell."""

__version__ = "0.1.0"
