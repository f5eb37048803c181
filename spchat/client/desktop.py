"""The desktop client's flow: connect form -> trust -> chat -> back. No Tk here.

``DesktopController`` owns the ChatClient and its ChatPresenter and tells a
view (``spchat.client.tkui.ChatWindow``, or anything with the same methods)
what to show:

* ``show_connect(values, error)``, ``show_busy(text)``: the connect form;
* ``show_trust(question)``: a first contact (or a changed key), asked in the
  window, never in a modal dialog (it would stall the reactor);
* ``show_chat(presenter)`` and ``refresh()``: the chat itself.

Each connection gets its own ``SharingNode`` (file sharing), started before
the login and stopped before the logout; a port for peers that cannot be
taken turns sharing off for that connection, never the chat.

Redraws are coalesced: a burst of events (history on join, a replay after a
reconnect) is drawn once, not once per message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from spchat.client.addresses import listed
from spchat.client.alternate import alternate_name
from spchat.client.commands import unsent_text
from spchat.client.connect import ConnectForm, check_form, load_last, save_last, trust_question
from spchat.client.downloads import download_dir
from spchat.client.folders import FolderOpener
from spchat.client.notify import DesktopNotifier
from spchat.client.pins import PinMismatch, PinStore, UnknownServer
from spchat.client.presenter import ChatPresenter
from spchat.client.session import ChatClient, ClientError
from spchat.p2p.node import SharingNode

REDRAW_DELAY = 0.03  # seconds: at most ~30 redraws a second
LOGOUT_WAIT = 3.0  # on close, how long a silent server may delay it
# And before it, how long lines on their way may go without an acknowledgement.
ACK_WAIT = 2.0


class DesktopController:
    log = Logger()

    def __init__(self, reactor, cfg, config_dir: Path):
        self.reactor, self.cfg = reactor, cfg
        self.config_dir = Path(config_dir)
        self.pins = PinStore(self.config_dir)
        # The window (or a test's stand-in): any object with the show_*,
        # refresh, focused and alert methods; set before start().
        self.view: Any = None
        self.client: ChatClient | None = None
        self.sharing: SharingNode | None = None
        self.presenter: ChatPresenter | None = None
        self.form: ConnectForm | None = None
        self.trust_problem: Exception | None = None
        self.closed = False
        self._redraw: IDelayedCall | None = None
        self._ticker = task.LoopingCall(self._tick)  # the reconnect countdown
        self.notifier = DesktopNotifier(reactor)
        self.folder_opener = FolderOpener(reactor)  # Open folder on a saved download
        self._ticker.clock = reactor

    # --- the connect form ------------------------------------------------------

    def form_values(self, given: dict | None = None) -> dict:
        """Defaults from the configuration, then last time's, then the command line."""
        values = {"host": self.cfg.client_host, "port": str(self.cfg.tcp_port), "name": ""}
        values.update(load_last(self.config_dir))
        values.update({k: str(v) for k, v in (given or {}).items() if v is not None})
        return values

    def start(self, given: dict | None = None, connect_now: bool = False) -> None:
        values = self.form_values(given)
        self.view.show_connect(values, "")
        self._ticker.start(1.0, now=False)
        if connect_now:
            self.submit(values["host"], values["port"], values["name"],
                        (given or {}).get("password") or "", bool((given or {}).get("register")))

    def submit(self, host: str, port: str, name: str, password: str, register: bool) -> None:
        """The Connect button."""
        if self.client is not None and self.client.status.state == "connecting":
            return  # already on its way
        try:
            self.form = check_form(host, port, name, password, register)
        except ValueError as e:
            self.view.show_connect(None, str(e))
            return
        try:
            save_last(self.config_dir, self.form)
        except OSError as e:  # a read-only home is no reason not to chat
            self.log.warn("cannot remember the connect form: {error}", error=e)
        self._dial()

    def _dial(self) -> None:
        form, cfg = self.form, self.cfg
        assert form is not None, "submit() fills the form before any dial"
        client = ChatClient(
            self.reactor, form.host, form.port, form.name, self.pins,
            # Tied to this client: a client left behind (Leave, then Connect
            # again) must not write into the next one's window.
            on_event=lambda msg: self._event(client, msg),
            on_status=lambda status: self._status(client, status),
            reconnect_delay=cfg.reconnect_delay, max_retries=cfg.max_retries,
            password=form.password, register=form.register, accept_new_keys=False,
        )
        self.view.show_busy(f"connecting to {listed(client.addresses)}…")
        self.client = client
        self.sharing, problem = self._start_sharing(client)
        self.presenter = ChatPresenter(client, sharing=self.sharing,
                                       download_dir=download_dir(cfg.download_dir))
        self.presenter.on_change = lambda: self._changed() if client is self.client else None
        self.presenter.on_attention = lambda title, text: self._attention(client, title, text)
        if problem:
            self.presenter.notice(problem, "sharing")
        client.connect().addCallbacks(self._welcomed, self._not_in,
                                      callbackArgs=(client,), errbackArgs=(client,))

    def _start_sharing(self, client):
        """(node, None), or (None, why) when peers' connections cannot be taken."""
        cfg = self.cfg
        node = SharingNode(self.reactor, client, port=cfg.p2p_port, direct=cfg.p2p_direct,
                           upload_bps=cfg.p2p_upload_bps, max_per_ip=cfg.p2p_max_per_ip)
        try:
            node.start()
        except Exception as e:  # a taken CHAT_P2P_PORT: chat still works
            client.sharing = None
            self.log.warn("file sharing is off: {error}", error=e)
            return None, (f"file sharing is off: cannot take peer connections on port "
                          f"{cfg.p2p_port}: {e}")
        return node, None

    def _stop_sharing(self) -> defer.Deferred:
        node, self.sharing = self.sharing, None
        if node is None:
            return defer.succeed(None)
        d = defer.maybeDeferred(node.stop)
        d.addErrback(lambda f: self.log.warn("stopping file sharing: {f}",
                                             f=f.getErrorMessage()))
        return d

    def _welcomed(self, welcome, client) -> None:
        if self.closed or client is not self.client:
            return
        self.view.show_chat(self.presenter)
        self._changed()

    def _not_in(self, failure, client: ChatClient) -> None:
        if self.closed or client is not self.client:
            return
        failure.trap(ClientError)
        self.client = None
        self._stop_sharing()
        if client.trust_problem is not None:
            self.trust_problem = client.trust_problem
            self.view.show_trust(trust_question(client.trust_problem))
            return
        if failure.value.code == "name_taken":
            self._offer_another_name(str(failure.value))
            return
        self.view.show_connect(None, str(failure.value))

    def _offer_another_name(self, refusal: str) -> None:
        """The name is in use: the form comes back with another one in it,
        one Connect away (as an IRC client tries its alternate nick)."""
        form = self.form
        assert form is not None, "a login refused was dialled from the form"
        other = alternate_name(form.name)
        values = {"host": form.host, "port": str(form.port), "name": other,
                  "password": form.password or "", "register": form.register}
        self.view.show_connect(values, f"{refusal}; {other} is filled in instead: "
                                       "Connect to use it, or type another name")

    def cancel(self) -> None:
        """The connect form's Cancel while connecting: the attempt is dropped
        (a port that takes the connection and says nothing waits no more)."""
        client = self.client
        if client is None or client.status.state != "connecting":
            return
        self.client = None
        self._stop_sharing()
        client.logout()
        self.view.show_connect(None, f"not connected: cancelled while connecting to "
                                     f"{client.where}")

    # --- trust on first contact -------------------------------------------------

    def trust(self) -> None:
        """"Trust and connect": pin exactly the key that was shown, dial again."""
        problem, self.trust_problem = self.trust_problem, None
        if not isinstance(problem, UnknownServer):
            return  # a changed key is never trusted from here
        self.pins.trust(problem.host, problem.port, problem.fingerprint)
        self._dial()

    def back(self) -> None:
        """Back to the connect form (from the trust panel or after leaving)."""
        self.trust_problem = None
        self.view.show_connect(None, "")

    # --- the chat ------------------------------------------------------------------

    def _event(self, client, msg) -> None:
        if client is self.client and self.presenter is not None:
            self.presenter.event(msg)
            self._changed()

    def _status(self, client, status) -> None:
        if client is self.client and self.presenter is not None:
            self.presenter.status(status)
            self._changed()

    def _attention(self, client, title: str, text: str) -> None:
        """A line for me (a direct one, a mention): the bell and a desktop
        notification, unless the window is the one being looked at."""
        if client is not self.client or self.closed or self.view.focused():
            return
        self.view.alert()
        self.notifier.notify(title, text)

    def _changed(self) -> None:
        """Something to draw: once, shortly, for everything that happens until then."""
        if self.closed or (self._redraw is not None and self._redraw.active()):
            return
        self._redraw = self.reactor.callLater(REDRAW_DELAY, self._draw)

    def _draw(self) -> None:
        self._redraw = None
        if not self.closed and self.client is not None and self.client.name is not None:
            self.view.refresh()

    def _tick(self) -> None:
        """Once a second: the reconnect countdown and the downloads' progress."""
        p = self.presenter
        if p is not None and (p.state.state == "reconnecting" or p.downloads_running()):
            self._changed()

    # What the user does in the chat; nothing once it has been left.

    def send(self, text: str) -> bool:
        """False: not taken (the window keeps it in the entry)."""
        if self.client is None or self.presenter is None:
            return False
        taken = self.presenter.send(text)
        self._changed()
        return taken

    def open(self, view: str) -> None:
        if self.client is not None and self.presenter is not None:
            self.presenter.open(view)
            self._changed()

    def join(self, typed: str, private: bool) -> bool:
        """The join box; False: refused as typed (the box keeps it)."""
        if self.client is None or self.presenter is None:
            return True
        taken = self.presenter.join(typed, private)
        self._changed()
        return taken

    def act_on_member(self, name: str, action) -> None:
        """An entry of a member's context menu (a presenter MenuAction)."""
        if self.client is not None and self.presenter is not None:
            self.presenter.act_on_member(name, action)
            self._changed()

    def act_on_conversation(self, view: str, action) -> None:
        """An entry of a room's context menu in the room list."""
        if self.client is not None and self.presenter is not None:
            self.presenter.act_on_conversation(view, action)
            self._changed()

    def reached_top(self) -> None:
        if (self.client is not None and self.presenter is not None
                and self.presenter.reached_top()):
            self._changed()

    def download(self, file_id: str) -> None:
        """Download on an offer."""
        if self.client is not None and self.presenter is not None:
            self.presenter.download(file_id)
            self._changed()

    def share(self, path: str) -> None:
        """A file chosen in the window's picker: shared as /share PATH does."""
        if self.client is not None and self.presenter is not None:
            self.presenter.share(path)
            self._changed()

    def unshare(self, file_id: str) -> None:
        """Stop sharing, on my own offer."""
        if self.client is not None and self.presenter is not None:
            self.presenter.unshare(file_id)
            self._changed()

    def cancel_download(self, key: int) -> None:
        if self.presenter is not None:
            self.presenter.cancel_download(key)
            self._changed()

    def close_download(self, key: int) -> None:
        if self.presenter is not None:
            self.presenter.close_download(key)
            self._changed()

    def open_folder(self, key: int) -> None:
        """Open folder on a saved download: the file manager, or (with none
        to start) the folder's path shown in the row, to be copied."""
        p = self.presenter
        folder = p.download_folder(key) if p is not None else None
        if p is None or folder is None:
            return
        if not self.folder_opener.open(folder):
            p.show_folder(key)
            self._changed()

    def reconnect(self) -> None:
        if self.client is not None and self.presenter is not None:
            self.presenter.reconnect()
            self._changed()

    def forget_server(self) -> None:
        """The changed-key panel's button: what --forget-server does, then a
        new connection, whose key is shown to be checked and trusted (or not)."""
        client = self.client
        if client is None or not isinstance(client.trust_problem, PinMismatch):
            return
        host, _, port = client.trust_problem.where.rpartition(":")
        self.pins.forget(host, int(port))  # the pin that disagrees (one of a list's)
        self._logout()
        self._dial()

    def leave(self) -> defer.Deferred:
        """Log out and go back to the connect form, saying what was typed
        and will not be sent."""
        client = self.client
        d = self._logout()
        assert self.form is not None, "a chat to leave was dialled from the form"
        values = self.form_values({"host": self.form.host, "port": self.form.port,
                                   "name": self.form.name})
        self.view.show_connect(values, self._unsent(client))
        if client is not None and client.connected:
            # Lines still going out get their chance (see _logout): told once over.
            d.addCallback(lambda _: self._told_unsent(client))
        return d

    @staticmethod
    def _unsent(client) -> str:
        """The connect form's word on the lines that will not go, if any."""
        if client is None or client.connected or not client.outbox:
            return ""
        return unsent_text(client.unsent(), client.why_unsent())

    def _told_unsent(self, client) -> None:
        if client.outbox and self.client is None and not self.closed:  # the form, still
            self.view.show_connect(None, unsent_text(
                client.unsent(), "the server had not acknowledged them when you left"))

    def _logout(self) -> defer.Deferred:
        """Stop sharing (downloads keep what they have), let what is being
        sent be acknowledged (bounded), then log out."""
        client, self.client, self.presenter = self.client, None, None
        stopped = self._stop_sharing()
        if client is None or client.status.state == "offline":
            return stopped
        if client.connected and client.outbox:
            stopped.addCallback(lambda _: client.drain(ACK_WAIT))
        d = stopped.addCallback(lambda _: client.logout().addTimeout(LOGOUT_WAIT, self.reactor))
        d.addErrback(lambda f: self.log.warn("logout: {f}", f=f.getErrorMessage()))
        return d

    def close(self) -> defer.Deferred:
        """The window is closing: log out (bounded wait); no more drawing."""
        if self.closed:
            return defer.succeed(None)
        self.closed = True
        if self._ticker.running:
            self._ticker.stop()
        if self._redraw is not None and self._redraw.active():
            self._redraw.cancel()
        return self._logout()
