"""Several nodes on one database: the bus that tells each node what the
others saved.

The database is the truth and gives each room its numbers; the bus only
says, after a commit, "room R has lines F..L now" (with the lines, if
they are few).  It may lose or delay a notice: a node delivers by the
log's numbers, and reads from the database what a notice did not carry.

``notices``: what goes over the bus (pure); ``order``: each room's lines
delivered once, in order, whichever way they came (sans-IO); ``redis_bus``:
the bus on Redis pub/sub (Twisted).
"""
