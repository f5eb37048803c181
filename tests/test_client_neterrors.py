"""Why a server cannot be reached, in plain words rather than Twisted's."""

from twisted.internet import defer, error
from twisted.python.failure import Failure

from spchat.client.neterrors import dial_error_text


def text(exception):
    return dial_error_text(Failure(exception), "chat.example", 5000)


def test_each_way_of_not_reaching_a_server_is_said_plainly():
    assert text(error.ConnectionRefusedError()) == (
        "nothing is listening at chat.example:5000 (connection refused)")
    assert text(error.DNSLookupError("chat.example")) == "chat.example: no such host"
    assert text(error.TimeoutError()) == "no answer from chat.example:5000"
    assert text(error.TCPTimedOutError()) == "no answer from chat.example:5000"
    assert text(error.NoRouteError()) == "no route to chat.example:5000 (is the network up?)"


def test_anything_else_still_names_the_server():
    said = text(defer.CancelledError("given up"))
    assert said == "cannot reach chat.example:5000: given up"
