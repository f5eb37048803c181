"""A seeder that flips one byte in every piece it serves, after the check a
good seeder makes: for the tests, a peer that sends bad data.

Run as ``python tests/p2p_flipper.py share PATH --name NAME ...``.
"""

import sys

from spchat.p2p import swarm


class Flipping(swarm.SeedFile):
    def read_block(self, index, offset, length):
        data = super().read_block(index, offset, length)
        if data is None:
            return None
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        return bytes(data)


swarm.SeedFile = Flipping
from spchat.p2p import node  # noqa: E402  (after the patch: node takes SeedFile at import)

node.SeedFile = Flipping

if __name__ == "__main__":
    from spchat.client.__main__ import main

    sys.exit(main(sys.argv[1:]))
