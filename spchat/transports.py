"""The transport our stream protocols are given, as one interface for mypy.

Twisted's TCP (and TLS) transports provide ITCPTransport, IPushProducer and
IConsumer, and keep a ``disconnecting`` flag; no interface of Twisted's
declares them together.  Only annotations use this one: nothing declares
that it provides it.
"""

from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from zope.interface import Attribute


class IStreamTransport(ITCPTransport, IPushProducer, IConsumer):
    """A connection's transport: write, close or cut it, pause its reading,
    register a producer of what is written to it."""

    disconnecting = Attribute("True once loseConnection() was called")
