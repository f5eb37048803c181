"""twistd plugin: `twistd -n spchat` runs the spchat server.

Kept tiny on purpose: twistd imports every plugin module to list them, so the
real work (and the reading of .env) happens in spchat.tap.makeService.
"""

from twisted.application.service import ServiceMaker

spchat = ServiceMaker(
    "spchat",
    "spchat.tap",
    "Encrypted, self-hosted chat room server",
    "spchat",
)
