"""spchat: an encrypted, self-hosted chat room on Twisted."""

__version__ = "0.1.0"
