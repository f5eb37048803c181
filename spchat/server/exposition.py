"""``--metrics``: the server's figures in Prometheus's text format over HTTP.

Imported only when ``--metrics`` is given, so a server without it needs no
``prometheus_client``.  Each service has a registry of its own (several
servers in one process, as in the tests, do not mix their figures), with
one collector that reads ``ServerFigures`` at each scrape.

The page is made on the reactor thread by a small twisted.web resource:
``prometheus_client.twisted.MetricsResource`` runs its WSGI app on a thread
of the reactor's pool, and the figures are read off the chat's parts, which
only the reactor thread may touch.
"""

from __future__ import annotations

from twisted.web import resource, server

from spchat.server.metrics import Figure, Histogram, MetricsError, ServerFigures

try:
    from prometheus_client import CollectorRegistry, exposition
    from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                        HistogramMetricFamily)
except ImportError:  # not installed: registry_for says what to install
    CollectorRegistry = None  # type: ignore[assignment,misc]  # checked by registry_for

PATH = b"metrics"


class FiguresCollector:
    """A prometheus_client collector of one server's ``ServerFigures``."""

    def __init__(self, figures: ServerFigures):
        self.source = figures

    def collect(self):
        return [_family(figure) for figure in self.source.figures()]


def _family(figure: Figure):
    labels = list(figure.labels)
    if figure.kind == "histogram":
        histograms = HistogramMetricFamily(figure.name, figure.help, labels=labels)
        for values, histogram in figure.samples:
            assert isinstance(histogram, Histogram), "a histogram's samples"
            histograms.add_metric(list(values), _buckets(histogram), histogram.sum)
        return histograms
    make = CounterMetricFamily if figure.kind == "counter" else GaugeMetricFamily
    family = make(figure.name, figure.help, labels=labels)
    for values, value in figure.samples:
        assert not isinstance(value, Histogram), "a counter's or a gauge's samples"
        family.add_metric(list(values), value)
    return family


def _buckets(histogram: Histogram) -> list[tuple[str, int]]:
    return [("+Inf" if bound == float("inf") else repr(float(bound)), count)
            for bound, count in histogram.cumulative()]


def registry_for(figures: ServerFigures):
    """A registry of this server's figures alone; MetricsError without
    prometheus_client."""
    if CollectorRegistry is None:
        raise MetricsError("--metrics (CHAT_METRICS_LISTEN) needs the prometheus_client "
                                 "package: pip install 'spchat[metrics]'")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures))
    return registry


class MetricsPage(resource.Resource):
    """GET /metrics: the registry in the text exposition format."""

    isLeaf = True

    def __init__(self, registry):
        super().__init__()
        self.registry = registry

    def render_GET(self, request):
        request.setHeader(b"Content-Type", exposition.CONTENT_TYPE_LATEST.encode())
        return exposition.generate_latest(self.registry)


class QuietSite(server.Site):
    """A Site that writes no access-log line per scrape (one every few
    seconds, for ever, says nothing)."""

    noisy = False

    def log(self, request):
        pass


def metrics_site(figures: ServerFigures) -> server.Site:
    """The HTTP factory that serves ``figures`` at /metrics."""
    root = resource.Resource()
    root.putChild(PATH, MetricsPage(registry_for(figures)))
    return QuietSite(root)
