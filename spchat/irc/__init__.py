"""The IRC gateway: existing IRC clients in spchat's rooms.

``protocol`` (Twisted) feeds ``connection.IrcConnection`` lines;
``commands`` turns them into the core's wire messages, ``outbound`` the
core's events into IRC lines; ``lines`` parses and formats, ``caps``
negotiates IRCv3 capabilities and SASL, ``channels`` mirrors the rooms a
connection is in.
"""
