"""The monitor window (Tk) and its connection to the server.

Tk runs inside the Twisted reactor through ``twisted.internet.tksupport``
(never ``mainloop()``, never a modal dialog: either would stall the reactor).
All decisions are the presenter's; this module only draws and forwards.
"""

from __future__ import annotations

import time
import tkinter as tk
from functools import partial
from tkinter import ttk

from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger

from spchat import wire
from spchat.client.protocol import ChatClientProtocol
from spchat.monitor.presenter import MonitorPresenter

RETRY_SECONDS = 2.0
COLUMNS = (
    ("name", "Name", 120), ("address", "Address", 150), ("state", "State", 100),
    ("client", "Client", 150), ("in_state", "For", 80), ("since", "Since", 80),
    ("idle", "Idle", 70), ("messages", "Msgs", 60), ("bytes_in", "In", 80),
    ("bytes_out", "Out", 80), ("node", "Node", 120),
)
STATE_COLOURS = {"connected": "#e3f6e3", "reconnecting": "#fff4cc", "offline": "#e6e6e6"}
GREYED = "#7a7a7a"  # the text of offline rows, and of every row while the server is away
ROOM_COLUMNS = (
    ("room", "Room", 110), ("members", "Online", 60), ("rate", "Msgs/min", 85),
    ("flags", "Flags", 110), ("last_seq", "Last #", 60), ("topic", "Topic", 180),
)
MEMBER_COLUMNS = (("name", "Name", 100), ("state", "State", 70), ("role", "Role", 70))
BAN_COLUMNS = (("name", "Name", 90), ("left", "Left", 70), ("reason", "Reason", 110))


class MonitorConnection:
    """Stays logged in as admin; feeds pushed tables to the presenter and
    comes back by itself when the server goes away."""

    log = Logger()

    def __init__(self, reactor, host, port, token, pins, presenter: MonitorPresenter, changed):
        self.reactor, self.host, self.port, self.token = reactor, host, port, token
        self.pins, self.presenter, self.changed = pins, presenter, changed
        self.proto = None
        self.result = ""  # the last answer to a request, for the status line
        # Long tables come in parts (one Noise message holds a few hundred
        # rows): the replies' by request id, the events' on their own.
        self.reply_parts: dict[str, wire.RowCollector] = {}
        self.event_parts = wire.RowCollector()
        self._stopped = False
        self._retry = None

    def start(self):
        self._stopped = False
        endpoint = HostnameEndpoint(self.reactor, self.host, self.port, timeout=10)
        proto = ChatClientProtocol(
            self.reactor, lambda fp: self.pins.check(self.host, self.port, fp), self
        )
        connectProtocol(endpoint, proto).addErrback(
            lambda f: self._lost(f.getErrorMessage())
        )

    def stop(self):
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.proto is not None:
            self.proto.hang_up()

    def send(self, request: wire.AdminRequest) -> None:
        if self.proto is not None and self.proto.is_open:
            self.proto.send_message(request)

    # listener interface of ChatClientProtocol
    def channel_open(self, proto):
        self.proto = proto
        self.reply_parts.clear()
        self.event_parts.reset()
        proto.send_message(wire.AdminLogin(self.token))

    def message_received(self, msg):
        if isinstance(msg, wire.AdminReply) and msg.rid == "login":
            self.presenter.connected()
            self.send(wire.AdminRequest("list", "list"))
            self.send(wire.AdminRequest("rooms", "rooms"))
            self.send(self.presenter.ask_bans())
        elif isinstance(msg, wire.AdminReply):
            msg = self.reply_parts.setdefault(msg.rid, wire.RowCollector()).add(msg)
            if msg is None:
                return  # more of the table is coming
            del self.reply_parts[msg.rid]
            if msg.rid == "list":
                self.presenter.sessions(msg)
            elif msg.rid == "rooms":
                self._rooms(msg.rooms)
            elif not (self.presenter.room_info(msg) or self.presenter.bans(msg)):
                self.result = msg.text if msg.ok else f"refused: {msg.text}"
                self.send(self.presenter.ask_bans())  # the action may have changed them
        elif isinstance(msg, wire.AdminEvent):
            whole = self.event_parts.add(msg)
            if whole is None:
                return
            self.presenter.sessions(whole)
            self._rooms(whole.rooms)
        elif isinstance(msg, (wire.Error, wire.Bye)):
            self.result = msg.text
        self.changed()

    def _rooms(self, rows: tuple) -> None:
        request = self.presenter.rooms(rows)
        if request is not None:
            self.send(request)

    def connection_lost(self, reason, proto=None):
        self.proto = None
        self._lost(reason or "connection lost")

    def _lost(self, reason):
        if self._stopped:
            return
        self.presenter.disconnected(reason, RETRY_SECONDS)
        self.changed()
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(RETRY_SECONDS, self.start)


class MonitorWindow:
    def __init__(self, root: tk.Tk, presenter: MonitorPresenter, send):
        self.root, self.presenter, self.send = root, presenter, send
        self.connection: MonitorConnection | None = None  # set by the caller, for its status text
        root.title("spchat monitor")
        root.minsize(760, 480)

        top = ttk.Frame(root, padding=6)
        top.pack(fill="x")
        self.header = ttk.Label(top, font=("TkDefaultFont", 11, "bold"))
        self.header.pack(side="left")
        self.chart = tk.Canvas(top, width=180, height=36, background="white",
                               highlightthickness=1, highlightbackground="#bbb")
        self.chart.pack(side="right")

        bar = ttk.Frame(root, padding=(6, 0))
        bar.pack(fill="x")
        ttk.Label(bar, text="Filter:").pack(side="left")
        self.filter = ttk.Entry(bar, width=20)
        self.filter.pack(side="left", padx=(4, 12))
        self.filter.bind("<KeyRelease>", lambda e: self._filter_changed())
        ttk.Label(bar, text="Reason / notice:").pack(side="left")
        self.reason = ttk.Entry(bar, width=30)
        self.reason.pack(side="left", padx=4)
        ttk.Label(bar, text="Ban minutes:").pack(side="left")
        self.minutes = ttk.Entry(bar, width=6)
        self.minutes.pack(side="left", padx=4)

        self.tree = ttk.Treeview(root, columns=[c for c, _, _ in COLUMNS], show="headings")
        for column, title, width in COLUMNS:
            self.tree.heading(column, text=title, command=partial(self._sort, column))
            self.tree.column(column, width=width, stretch=column in ("name", "client"))
        for state, colour in STATE_COLOURS.items():
            self.tree.tag_configure(state, background=colour,
                                    foreground=GREYED if state == "offline" else "")
        self.tree.tag_configure("unreachable", foreground=GREYED, background="#f2f2f2")
        self.tree.pack(fill="both", expand=True, padx=6, pady=6)

        buttons = ttk.Frame(root, padding=(6, 0))
        buttons.pack(fill="x")
        self.buttons = {}
        for action, label in (("kick", "Kick"), ("ban", "Ban"), ("unban", "Unban"),
                              ("broadcast", "Broadcast"), ("disconnect_all", "Disconnect all"),
                              ("shutdown", "Shut down")):
            button = ttk.Button(buttons, text=label, command=partial(self.ask, action))
            button.pack(side="left", padx=2)
            self.buttons[action] = button

        # The confirmation lives in the window: a modal dialog would stall Twisted.
        self.confirm_bar = ttk.Frame(root, padding=6)
        self.question = ttk.Label(self.confirm_bar, foreground="#a00000")
        self.question.pack(side="left")
        self.yes = ttk.Button(self.confirm_bar, text="Yes", command=self.confirm)
        self.yes.pack(side="left", padx=4)
        self.no = ttk.Button(self.confirm_bar, text="No", command=self.cancel)
        self.no.pack(side="left")

        self._build_rooms(root)

        self.status = ttk.Label(root, padding=6, foreground="#555")
        self.status.pack(fill="x", side="bottom")

        self.menu = tk.Menu(root, tearoff=False)
        for action, label in (("kick", "Kick"), ("ban", "Ban"), ("unban", "Unban")):
            self.menu.add_command(label=label, command=partial(self.ask, action))
        self.tree.bind("<Button-3>", self._context_menu)
        self.refresh()

    def _build_rooms(self, root: tk.Tk) -> None:
        """Below the sessions: every room, and the members of the one selected."""
        panel = ttk.Frame(root, padding=(6, 6, 6, 0))
        panel.pack(fill="both", expand=True)
        rooms = ttk.LabelFrame(panel, text="Rooms", padding=4)
        rooms.pack(side="left", fill="both", expand=True)
        self.rooms = ttk.Treeview(rooms, columns=[c for c, _, _ in ROOM_COLUMNS],
                                  show="headings", height=6, selectmode="browse")
        for column, title, width in ROOM_COLUMNS:
            self.rooms.heading(column, text=title)
            self.rooms.column(column, width=width, stretch=column == "topic")
        self.rooms.pack(fill="both", expand=True)
        self.rooms.bind("<<TreeviewSelect>>", lambda e: self._room_selected())
        self.members_frame = ttk.LabelFrame(panel, padding=4)
        self.members_frame.pack(side="left", fill="y", padx=(6, 0))
        self.members = ttk.Treeview(self.members_frame, show="headings", height=6,
                                    columns=[c for c, _, _ in MEMBER_COLUMNS])
        for column, title, width in MEMBER_COLUMNS:
            self.members.heading(column, text=title)
            self.members.column(column, width=width, stretch=False)
        self.members.tag_configure("muted", foreground="#888")
        self.members.pack(fill="y", expand=True)
        self._build_bans(panel)

    def _build_bans(self, panel) -> None:
        """The server bans still running, and Unban for the one selected."""
        frame = ttk.LabelFrame(panel, text="Bans", padding=4)
        frame.pack(side="left", fill="y", padx=(6, 0))
        self.bans = ttk.Treeview(frame, show="headings", height=5, selectmode="browse",
                                 columns=[c for c, _, _ in BAN_COLUMNS])
        for column, title, width in BAN_COLUMNS:
            self.bans.heading(column, text=title)
            self.bans.column(column, width=width, stretch=column == "reason")
        self.bans.pack(fill="both", expand=True)
        self.unban_button = ttk.Button(frame, text="Unban selected", command=self._unban_selected)
        self.unban_button.pack(anchor="e", pady=(4, 0))

    # --- drawing ----------------------------------------------------------

    def refresh(self) -> None:
        selected = self.tree.selection()
        self.tree.delete(*self.tree.get_children())
        for row in self.presenter.rows():
            values = (row.name, row.address, row.state, row.client, row.in_state,
                      time.strftime("%H:%M:%S", time.localtime(row.since)), row.idle,
                      row.messages, row.bytes_in, row.bytes_out, row.node)
            # Named by its session, so the row selected stays the one selected.
            iid = row.id if not self.tree.exists(row.id) else None  # None: Tk names it
            tags = (row.state,) if self.presenter.reachable else ("unreachable",)
            self.tree.insert("", "end", iid=iid, values=values, tags=tags)
        for column, title, _ in COLUMNS:
            self.tree.heading(column, text=self.presenter.heading(column, title))
        kept = [item for item in selected if self.tree.exists(item)]
        if kept:
            self.tree.selection_set(kept)
        self._refresh_rooms()
        self.header.configure(text=self.presenter.header())
        result = self.connection.result if self.connection is not None else ""
        self.status.configure(text=" — ".join(filter(None, [self.presenter.status, result])))
        self._draw_chart()

    def _refresh_rooms(self) -> None:
        # A click not yet told (Tk sends <<TreeviewSelect>> later) is kept too.
        clicked = self.rooms.selection()
        self.rooms.delete(*self.rooms.get_children())
        for row in self.presenter.room_rows():
            # The item is named after the room, so that a click says which room.
            self.rooms.insert("", "end", iid=row.name, values=(
                f"#{row.name}", row.members, f"{row.per_minute:.1f}", row.flags, row.last_seq,
                row.topic))
        kept = [room for room in clicked if self.rooms.exists(room)]
        if kept:
            self.rooms.selection_set(kept)
        elif self.presenter.selected_room in self.rooms.get_children():
            self.rooms.selection_set(self.presenter.selected_room)
        self.members.delete(*self.members.get_children())
        for member in self.presenter.member_rows():
            self.members.insert("", "end", values=(member.name, member.state, member.role),
                                tags=(member.role,))
        self.members_frame.configure(text=self.presenter.members_title)
        selected = self.selected_ban()
        self.bans.delete(*self.bans.get_children())
        for ban in self.presenter.ban_rows():
            # Named after the ban's name, so that the one selected stays so.
            self.bans.insert("", "end", iid=ban.name, values=(ban.name, ban.left, ban.reason))
        if selected is not None and self.bans.exists(selected):
            self.bans.selection_set(selected)

    def _draw_chart(self) -> None:
        rates = self.presenter.rate_series()[-60:]
        self.chart.delete("all")
        top = max(rates) or 1.0
        width, height = 180, 36
        step = width / max(1, len(rates) - 1)
        points = [(i * step, height - 2 - (r / top) * (height - 6)) for i, r in enumerate(rates)]
        if len(points) > 1:
            self.chart.create_line(*[c for p in points for c in p], fill="#2a6fdb", width=2)
        self.chart.create_text(4, 4, anchor="nw", text=f"{rates[-1]:.1f}/s", fill="#555")

    # --- user actions -------------------------------------------------------

    def selected_name(self) -> str | None:
        selection = self.tree.selection()
        return self.tree.item(selection[0], "values")[0] if selection else None

    def selected_ban(self) -> str | None:
        selection = self.bans.selection()
        return selection[0] if selection else None

    def _room_selected(self) -> None:
        selection = self.rooms.selection()
        request = self.presenter.select_room(selection[0] if selection else None)
        if request is not None:
            self.send(request)
            self._refresh_rooms()

    def _context_menu(self, event) -> None:
        item = self.tree.identify_row(event.y)
        if item:
            self.tree.selection_set(item)
            self.menu.tk_popup(event.x_root, event.y_root)

    def _sort(self, column: str) -> None:
        self.presenter.sort_by(column)
        self.refresh()

    def _filter_changed(self) -> None:
        self.presenter.set_filter(self.filter.get())
        self.refresh()

    def ask(self, action: str, name: str | None = None) -> None:
        """A button: ``name``, or the session selected, is whom it acts on."""
        minutes_text = self.minutes.get().strip()
        try:
            minutes = float(minutes_text) if minutes_text else None
            question = self.presenter.ask(
                action, name or self.selected_name(), self.reason.get().strip() or None, minutes
            )
        except ValueError as e:
            self.status.configure(text=str(e))
            return
        self.question.configure(text=question)
        self.confirm_bar.pack(fill="x", before=self.status)

    def _unban_selected(self) -> None:
        name = self.selected_ban()
        if name is None:
            self.status.configure(text="choose a ban in the list to lift")
        else:
            self.ask("unban", name)

    def confirm(self) -> None:
        request = self.presenter.confirm()
        self.confirm_bar.pack_forget()
        if request is not None:
            self.send(request)
            # Used: a reason left in the field would go with the next action.
            self.reason.delete(0, "end")
            self.minutes.delete(0, "end")

    def cancel(self) -> None:
        self.presenter.cancel()
        self.confirm_bar.pack_forget()
