"""spchat: an encrypted, self-hosted chat room on Twisted."""

__version__ = "0.2.0.dev0"  # rooms; 0.1.0 had one room
