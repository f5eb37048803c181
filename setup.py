import re
from pathlib import Path

from setuptools import setup

# One version, spchat.__version__'s: read, not imported (what spchat
# imports may not be installed yet when this runs).
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (Path(__file__).parent / "spchat" / "__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="spchat",
    version=VERSION,
    description="Encrypted, self-hosted chat room on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    # twisted.plugins is listed so the plugin module is installed next to
    # Twisted's own; there is deliberately no twisted/__init__.py here.
    packages=["spchat", "spchat.server", "spchat.cluster", "spchat.client", "spchat.monitor",
              "spchat.bench", "spchat.irc", "spchat.p2p", "twisted.plugins"],
    # confusable-homoglyphs: Unicode's confusables (TR39) and scripts, for look-alike names.
    # python-bidi, arabic-reshaper: the window draws right-to-left text in
    # reading order (Tk 8.6 does not).
    install_requires=["Twisted[tls]>=23.10", "cryptography>=42", "python-dotenv>=1.0",
                      "confusable-homoglyphs>=3.3", "python-bidi>=0.6", "arabic-reshaper>=3.0"],
    # pillow: the window tests save screenshots of the real Tk windows.
    # bench: python -m spchat.bench draws its plot with matplotlib.
    # postgresql: the driver of --database (imported only when one is given);
    # the tests run the store on a real PostgreSQL server, so they need it too.
    # bus: the Redis client of --bus (imported only when one is given), and
    # the tests run the bus on a real Redis server.
    extras_require={
        "postgresql": ["psycopg2-binary>=2.9"],
        "bus": ["txredisapi>=1.4.10"],
        # metrics: --metrics serves Prometheus's text format (imported only then).
        "metrics": ["prometheus_client>=0.20"],
        # docutils: the test that README.rst and docs/ render without errors.
        "test": ["pytest", "pytest-twisted", "hypothesis", "pillow", "psycopg2-binary>=2.9",
                 "txredisapi>=1.4.10", "prometheus_client>=0.20", "docutils"],
        "bench": ["matplotlib"],
        # scripts/run_irctest.sh: the IRC conformance suite, two tests at a time.
        "irc-test": ["pytest-xdist", "filelock"],
    },
)
