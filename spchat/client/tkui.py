"""The desktop chat window (Tk). It draws and forwards; it decides nothing.

Three panels in one window, one shown at a time: the connect form, the trust
question, and the chat.  The chat has the room list (rooms, then direct
conversations, with their unread counts and a mark when a line names me)
and its join box on the left, the open conversation under its room's name,
flags and topic in the middle, and the open room's members with their roles
on the right; right-clicking a member or a room opens its context menu.
Tk runs inside the Twisted reactor through ``twisted.internet.tksupport``:
no ``mainloop()`` and no modal dialog here, either would stall the network
(a ``tk_popup`` menu is not one on X11: it grabs the pointer and returns).
Everything shown comes from the ``ChatPresenter`` (what to show) and
``DesktopController`` (which panel).
"""

from __future__ import annotations

import tkinter as tk
from functools import partial
from pathlib import Path
from tkinter import font as tkfont
from tkinter import ttk

from spchat.client.bidi import display_order
from spchat.client.presenter import mention_spans
from spchat.client.tkdownloads import DownloadBar
from spchat.client.tkentry import MessageEntry
from spchat.client.tkfiles import FilePicker

STATE_COLOURS = {"online": "#1a7f37", "idle": "#9a6700", "reconnecting": "#8c8c8c"}
STALE_COLOUR = "#b0b0b0"
STATUS_COLOURS = {"connected": "#1a7f37", "connecting": "#555555",
                  "reconnecting": "#9a6700", "offline": "#b42318"}
NOTICE_STYLES = {"broadcast": "broadcast", "kicked": "alert", "banned": "alert",
                 "kick": "alert", "ban": "alert", "deleted": "alert", "idle": "notice",
                 "shutdown": "alert", "saved": "saved"}
MENTION_COLOUR = "#b42318"
# Each line after the first of a multi-line text starts under the text with
# this mark (as in line mode), so no line of a message can pass for an event.
CONTINUATION_MARK = "| "


def conversation_label(c) -> tuple[str, str]:
    """A room list row: ("# dev", "2 @") is a room with two unread lines, one
    naming me."""
    name = "# " + c.view[1:] if c.view.startswith("#") else c.view
    if c.left:
        name += " (left)"
    badge = (str(c.unread) if c.unread else "") + (" @" if c.mentioned else "")
    return name, badge.strip()


def conversation_tags(c) -> tuple[str, ...]:
    if c.left:
        return ("left",)
    if c.mentioned:
        return ("mention",)
    return ("unread",) if c.unread else ()


class ChatWindow:
    def __init__(self, master, controller):
        self.master, self.controller = master, controller
        self.presenter = None
        master.title("spchat")
        master.minsize(520, 360)
        master.geometry("960x580")
        master.bind("<FocusIn>", lambda e: self._focused_again(), add="+")
        self._base = tkfont.nametofont("TkDefaultFont")
        self._build_connect()
        self._build_trust()
        self._build_chat()
        self._panel = None
        self._shown: list = []  # the Line objects drawn, in order
        self._shown_view = None
        self._pending_note = ""  # what a pending line says after it, as drawn
        self._starts: list[str] = []  # Text index where each drawn Line starts
        self._conversations_shown = None
        self._conversation_views: list[str] = []  # the room list's rows, in order
        self._drawn_selection = ()  # the room list's row selected by drawing it
        self._offer_buttons: list = []  # (file id, button) in the text, in order
        self.picker: FilePicker | None = None  # Share file…'s, while it is open
        self._picker_folder = Path.home()  # where the next one opens: the last one's
        self._members_shown: list = []  # the MemberRows drawn, in order
        self._members_drawn = None  # (the MemberList drawn, its version, stale), None: nothing yet

    # --- building ----------------------------------------------------------------

    def _build_connect(self) -> None:
        f = self.connect_frame = ttk.Frame(self.master, padding=24)
        ttk.Label(f, text="Connect to an spchat server",
                  font=(self._base.actual("family"), 14, "bold")).grid(
            row=0, column=0, columnspan=2, sticky="w", pady=(0, 12))
        self.fields = {}
        hints = {"host": "(a server of several nodes: a,b,c or a:7000,b:7001)",
                 "password": "(optional: only for a registered name)"}
        row = 1
        for key, label in (("host", "Server"), ("port", "Port"), ("name", "Name"),
                           ("password", "Password")):
            ttk.Label(f, text=label).grid(row=row, column=0, sticky="w", pady=3, padx=(0, 8))
            entry = ttk.Entry(f, width=32, show="•" if key == "password" else "")
            entry.grid(row=row, column=1, sticky="we", pady=3)
            entry.bind("<Return>", lambda e: self._connect_clicked())
            self.fields[key] = entry
            row += 1
            if key in hints:
                ttk.Label(f, text=hints[key], foreground="#666").grid(
                    row=row, column=1, sticky="w")
                row += 1
        self.register = tk.BooleanVar(value=False)
        ttk.Checkbutton(f, text="Register this name with the password",
                        variable=self.register).grid(row=row, column=1, sticky="w", pady=6)
        buttons = ttk.Frame(f)
        buttons.grid(row=row + 1, column=1, sticky="w", pady=6)
        self.connect_button = ttk.Button(buttons, text="Connect", command=self._connect_clicked)
        self.connect_button.pack(side="left")
        # Shown while connecting: a port that says nothing need not be waited for.
        self.cancel_button = ttk.Button(buttons, text="Cancel",
                                        command=lambda: self.controller.cancel())
        self.connect_message = ttk.Label(f, wraplength=460, justify="left")
        self.connect_message.grid(row=row + 2, column=0, columnspan=2, sticky="w", pady=6)
        f.columnconfigure(1, weight=1)

    def _build_trust(self) -> None:
        f = self.trust_frame = ttk.Frame(self.master, padding=24)
        self.trust_title = ttk.Label(f, font=(self._base.actual("family"), 14, "bold"))
        self.trust_title.pack(anchor="w", pady=(0, 10))
        ttk.Label(f, text="Server key fingerprint:").pack(anchor="w")
        # An entry, read-only, so the fingerprint can be selected and copied.
        self.trust_fingerprint = ttk.Entry(f, width=72, font="TkFixedFont")
        self.trust_fingerprint.pack(anchor="w", fill="x", pady=4)
        self.trust_text = ttk.Label(f, wraplength=620, justify="left")
        self.trust_text.pack(anchor="w", pady=10)
        buttons = ttk.Frame(f)
        buttons.pack(anchor="w")
        self.trust_button = ttk.Button(buttons, text="Trust and connect",
                                       command=self.controller.trust)
        self.trust_button.bind("<Return>", lambda e: self.controller.trust())
        self.trust_button.pack(side="left", padx=(0, 6))
        self.trust_back = ttk.Button(buttons, text="Cancel", command=self.controller.back)
        self.trust_back.bind("<Return>", lambda e: self.controller.back())
        self.trust_back.pack(side="left")

    def _build_chat(self) -> None:
        f = self.chat_frame = ttk.Frame(self.master)
        # Packed before the panes, so a small window shrinks the text, not these.
        bar = ttk.Frame(f, padding=6)
        bar.pack(fill="x", side="bottom")
        # The buttons first: pack gives them their room before the text, so
        # a long status wraps instead of pushing them out of the window.
        self.leave_button = ttk.Button(bar, text="Leave", command=self.controller.leave)
        self.leave_button.pack(side="right")
        self.reconnect_button = ttk.Button(bar, text="Reconnect now",
                                           command=self.controller.reconnect)
        self.reconnect_button.pack(side="right", padx=4)
        self.status = ttk.Label(bar, justify="left")
        self.status.pack(side="left", fill="x", expand=True)
        self.status.bind("<Configure>",
                         lambda e: self.status.configure(wraplength=max(e.width - 4, 100)))
        self._build_key_change(f)

        entry_row = ttk.Frame(f, padding=(6, 0))
        entry_row.pack(fill="x", side="bottom")
        # Downloads under way, one row each (a bar and its line), above the
        # entry; packed only while there is one.
        self.downloads = ttk.Frame(f, padding=(6, 0, 6, 4))
        self.download_bar = DownloadBar(self.downloads, self.controller)
        self.entry = MessageEntry(entry_row, self._send_clicked, self._completion_names,
                                  font="TkDefaultFont")
        self.entry.pack(side="left", fill="x", expand=True)
        ttk.Button(entry_row, text="Send", command=self._send_clicked).pack(
            side="left", padx=4, anchor="s")
        self.share_button = ttk.Button(entry_row, text="Share file…",
                                       command=self._share_clicked)
        self.share_button.pack(side="left", anchor="s")

        panes = self.panes = ttk.PanedWindow(f, orient="horizontal")
        panes.pack(fill="both", expand=True, padx=6, pady=6)
        panes.add(self._build_room_list(panes), weight=1)
        panes.add(self._build_conversation(panes), weight=5)
        panes.add(self._build_member_list(panes), weight=1)
        # One menu for every right-click, filled anew each time.  tk_popup
        # only grabs the pointer on X11 and returns: the reactor keeps running.
        self.menu = tk.Menu(self.master, tearoff=False)
        self._configure_tags()

    def _build_key_change(self, parent) -> None:
        """The server's key changed during the chat: both keys and what to
        do, above the conversation (packed only then; never a dialog)."""
        f = self.key_panel = tk.Frame(parent, padx=12, pady=8, background="#fdecea",
                                      highlightthickness=1, highlightbackground="#b42318")
        self.key_title = tk.Label(f, font=self._bold(12), foreground="#b42318",
                                  background="#fdecea", anchor="w")
        self.key_title.grid(row=0, column=0, columnspan=2, sticky="we")
        self.key_fingerprints = {}
        for row, (key, label) in enumerate((("pinned", "Trusted before:"),
                                            ("presented", "Presented now:")), 1):
            tk.Label(f, text=label, background="#fdecea").grid(row=row, column=0, sticky="w",
                                                               padx=(0, 8))
            # Read-only entries: a fingerprint can be selected and compared.
            entry = ttk.Entry(f, font="TkFixedFont")
            entry.grid(row=row, column=1, sticky="we", pady=1)
            self.key_fingerprints[key] = entry
        self.key_text = tk.Label(f, justify="left", anchor="w", background="#fdecea")
        self.key_text.grid(row=3, column=0, columnspan=2, sticky="we", pady=(6, 6))
        self.key_text.bind("<Configure>",
                           lambda e: self.key_text.configure(wraplength=max(e.width - 4, 100)))
        buttons = tk.Frame(f, background="#fdecea")
        buttons.grid(row=4, column=0, columnspan=2, sticky="w")
        self.forget_button = ttk.Button(buttons, text="Forget the old key and connect again",
                                        command=lambda: self.controller.forget_server())
        self.forget_button.pack(side="left", padx=(0, 6))
        ttk.Button(buttons, text="Leave", command=self.controller.leave).pack(side="left")
        f.columnconfigure(1, weight=1)
        self._key_shown = None

    def _draw_key_change(self, change) -> None:
        if change == self._key_shown:
            return
        self._key_shown = change
        if change is None:
            self.key_panel.pack_forget()
            return
        self.key_title.configure(text=change.title)
        for key, entry in self.key_fingerprints.items():
            entry.configure(state="normal")
            entry.delete(0, "end")
            entry.insert(0, getattr(change, key))
            entry.configure(state="readonly")
        self.key_text.configure(text=change.text)
        self.key_panel.pack(fill="x", side="top", padx=6, pady=(6, 0), before=self.panes)

    def _bold(self, size: int | None = None):
        return (self._base.actual("family"), size or self._base.actual("size") or 10, "bold")

    def _italic(self):
        return (self._base.actual("family"), self._base.actual("size") or 10, "italic")

    def _build_room_list(self, parent) -> ttk.Frame:
        """Rooms, then direct conversations, with their unread counts; the
        join box under them."""
        f = ttk.Frame(parent)
        ttk.Label(f, text="Conversations", font=self._bold()).pack(anchor="w", padx=4)
        box = ttk.Frame(f, padding=(0, 6, 0, 0))
        box.pack(fill="x", side="bottom")
        ttk.Label(box, text="Join or create a room:").grid(row=0, column=0, columnspan=2,
                                                          sticky="w")
        self.join_entry = ttk.Entry(box, width=14)
        self.join_entry.insert(0, "#")
        self.join_entry.grid(row=1, column=0, sticky="we")
        self.join_entry.bind("<Return>", lambda e: self._join_clicked())
        self.join_button = ttk.Button(box, text="Join", width=5, command=self._join_clicked)
        self.join_button.grid(row=1, column=1, padx=(4, 0))
        self.join_private = tk.BooleanVar(value=False)
        ttk.Checkbutton(box, text="private (if new)", variable=self.join_private).grid(
            row=2, column=0, columnspan=2, sticky="w")
        box.columnconfigure(0, weight=1)

        tree = self.room_list = ttk.Treeview(f, show="tree", columns=("badge",),
                                             selectmode="browse")
        tree.column("#0", width=120, minwidth=80, stretch=True)
        tree.column("badge", width=40, minwidth=30, anchor="e", stretch=False)
        tree.tag_configure("unread", font=self._bold())
        tree.tag_configure("mention", foreground=MENTION_COLOUR, font=self._bold())
        tree.tag_configure("left", foreground="#8c8c8c", font=self._italic())
        tree.pack(fill="both", expand=True)
        tree.bind("<<TreeviewSelect>>", lambda e: self._conversation_selected())
        tree.bind("<Button-3>", self._conversation_menu)
        return f

    def _build_conversation(self, parent) -> ttk.Frame:
        """The open conversation, under its room's name, flags and topic."""
        f = ttk.Frame(parent)
        self.header = ttk.Label(f, padding=(8, 2, 8, 6), foreground="#1f1f1f",
                                font=self._bold(12), justify="left")
        self.header.pack(fill="x", side="top")
        # A long topic wraps instead of widening the window.
        self.header.bind("<Configure>",
                         lambda e: self.header.configure(wraplength=max(e.width - 16, 100)))
        self.text = tk.Text(f, wrap="word", state="disabled", padx=8, pady=6,
                            relief="flat", highlightthickness=1, highlightbackground="#ccc",
                            cursor="arrow", spacing1=2, font="TkDefaultFont")
        self.scroll = ttk.Scrollbar(f, command=self._scrollbar_moved)
        self.text.configure(yscrollcommand=self.scroll.set)
        self.scroll.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        # Older history is loaded when the user scrolls to the top (never by
        # itself: a short conversation is not a reason to fetch pages).
        for sequence in ("<Button-4>", "<MouseWheel>", "<Prior>", "<Control-Home>"):
            self.text.bind(sequence, lambda e: self.text.after_idle(self._check_top), add="+")
        for sequence in ("<Button-4>", "<Button-5>", "<MouseWheel>", "<Prior>", "<Next>",
                         "<Control-Home>", "<Control-End>"):
            self.text.bind(sequence, lambda e: self.text.after_idle(self._note_position),
                           add="+")
        # Whoever reads the newest line keeps reading it when the window
        # (or the part of it the conversation has) changes size.
        self._at_bottom = True
        self._unseen = 0  # messages come in below while scrolled up
        self.jump_button = ttk.Button(f, style="Jump.TButton", cursor="hand2",
                                      command=self.jump_to_latest)
        self.text.bind("<Configure>", self._resized, add="+")
        return f

    def _build_member_list(self, parent) -> ttk.Frame:
        f = ttk.Frame(parent)
        self.members_title = ttk.Label(f, text="Members", font=self._bold())
        self.members_title.pack(anchor="w", fill="x", padx=4)
        # "(reconnecting…)" after a long room name wraps in the narrow pane.
        self.members_title.bind("<Configure>", lambda e: self.members_title.configure(
            wraplength=max(e.width - 4, 60)))
        ttk.Label(f, text="double-click a name to talk privately, right-click it for more",
                  foreground="#777", wraplength=160).pack(anchor="w", padx=4, side="bottom")
        self.members = tk.Listbox(f, activestyle="none", width=22, relief="flat",
                                  highlightthickness=1, highlightbackground="#ccc")
        self.members.pack(fill="both", expand=True)
        self.members.bind("<Double-Button-1>", self._member_double_clicked)
        self.members.bind("<Button-3>", self._member_menu)
        return f

    def _configure_tags(self) -> None:
        t, family = self.text, self._base.actual("family")
        size = self._base.actual("size") or 10
        # Wrapped lines start under the text, not under the time stamp.
        indent = self._base.measure("00:00:00  ")
        t.tag_configure("line", lmargin2=indent)
        t.tag_configure("dated", lmargin2=self._base.measure("00 Mmm 0000 00:00:00  "))
        t.tag_configure("day", foreground="#555555", font=(family, size, "bold"),
                        justify="center", spacing1=8, spacing3=4)
        t.tag_configure("time", foreground="#8c8c8c")
        t.tag_configure("sender", font=(family, size, "bold"))
        t.tag_configure("own", background="#eef4ff")
        t.tag_configure("pending", foreground="#8c8c8c")
        t.tag_configure("notice", foreground="#6e6e6e", font=(family, size, "italic"))
        t.tag_configure("broadcast", foreground="#7a2e00", font=(family, size, "bold"))
        t.tag_configure("alert", foreground="#b42318", font=(family, size, "bold"))
        t.tag_configure("error", foreground="#b42318")
        t.tag_configure("history", background="#f4f4f4")
        t.tag_configure("separator", foreground="#8c8c8c", justify="center")
        t.tag_configure("offer", foreground="#0b5394", background="#eef6ee")
        t.tag_configure("saved", foreground="#1a7f37")
        t.tag_configure("mention", background="#fff4ce")
        t.tag_configure("mention_name", foreground=MENTION_COLOUR, font=(family, size, "bold"))
        # Last, so the mark is grey whatever the text around it is.
        t.tag_configure("continuation", lmargin1=indent)
        t.tag_configure("continuation_mark", foreground="#8c8c8c")
        style = ttk.Style(self.master)
        style.configure("Offer.TButton", padding=(6, 0))
        style.configure("Jump.TButton", padding=(8, 2), foreground="#0b5394")

    # --- drawing attention ------------------------------------------------------------

    def focused(self) -> bool:
        """Is this window the one the keyboard is in (the one being looked at)?"""
        try:
            widget = self.master.focus_displayof()
            return widget is not None and widget.winfo_toplevel() is self.master
        except (KeyError, tk.TclError):  # focus in a widget tkinter does not know
            return False

    def alert(self) -> None:
        """The bell, and the urgency hint where this Tk has one (Tk 8.6 on
        X11 has not: the unread count in the title says it there)."""
        self.master.bell()
        try:
            self.master.wm_attributes("-urgent", 1)
        except tk.TclError:
            pass

    def _focused_again(self) -> None:
        try:
            self.master.wm_attributes("-urgent", 0)
        except tk.TclError:
            pass

    # --- which panel ---------------------------------------------------------------

    def _show(self, panel) -> None:
        if self._panel is not panel:
            if self._panel is not None:
                self._panel.pack_forget()
            panel.pack(fill="both", expand=True)
            self._panel = panel

    def show_connect(self, values: dict | None, error: str) -> None:
        if values is not None:
            for key, entry in self.fields.items():
                entry.delete(0, "end")
                entry.insert(0, values.get(key, ""))
            self.register.set(bool(values.get("register")))
        self.connect_message.configure(text=error, foreground="#b42318")
        self.connect_button.state(["!disabled"])
        self.cancel_button.pack_forget()
        self.master.title("spchat")
        self.status.configure(text="")  # nothing left from a chat that was left
        self.presenter = None
        self._show(self.connect_frame)
        empty = next((e for k, e in self.fields.items() if k != "password" and not e.get()), None)
        (empty or self.fields["password"]).focus_set()  # Return there connects

    def show_busy(self, text: str) -> None:
        self.connect_message.configure(text=text, foreground="#555555")
        self.connect_button.state(["disabled"])
        self.cancel_button.pack(side="left", padx=(6, 0))
        self._show(self.connect_frame)

    def show_trust(self, question) -> None:
        self.trust_title.configure(text=question.title,
                                   foreground="#1f1f1f" if question.can_trust else "#b42318")
        self.trust_fingerprint.configure(state="normal")
        self.trust_fingerprint.delete(0, "end")
        self.trust_fingerprint.insert(0, question.fingerprint)
        self.trust_fingerprint.configure(state="readonly")
        self.trust_text.configure(text=question.text)
        if question.can_trust:
            self.trust_button.pack(side="left", padx=(0, 6), before=self.trust_back)
            self.trust_back.configure(text="Cancel")
        else:
            self.trust_button.pack_forget()
            self.trust_back.configure(text="Back")
        self.connect_button.state(["!disabled"])
        self._show(self.trust_frame)
        # Keys go to this panel now: Return answers it, not the hidden form.
        (self.trust_button if question.can_trust else self.trust_back).focus_set()

    def show_chat(self, presenter) -> None:
        self.presenter = presenter
        self._shown, self._shown_view, self._starts = [], None, []
        self._unseen = 0
        self._conversations_shown = self._members_drawn = None
        self.download_bar.clear()  # a previous chat's
        self.key_panel.pack_forget()  # a previous chat's
        self._key_shown = None
        self.fields["password"].delete(0, "end")  # not kept on screen
        self._show(self.chat_frame)
        self.refresh()
        self.entry.focus_set()

    # --- drawing the chat ----------------------------------------------------------------

    def refresh(self) -> None:
        p = self.presenter
        if p is None or self._panel is not self.chat_frame:
            return
        # The note after pending lines changes with the connection: drawn again.
        note, self._pending_note = self._pending_note, p.pending_note()
        self._draw_lines(p.lines(), p.active, changed=note != self._pending_note)
        self._draw_downloads(p.download_rows())
        self._draw_key_change(p.key_change())
        self._draw_conversations(p.conversations(), p.active)
        self.header.configure(text=display_order(p.header()))
        room = p.member_room()
        title = f"Members of #{room}" if room else "Members"
        if room and p.members_stale:
            title += " (as last seen, reconnecting…)"
        self.members_title.configure(text=title)
        self._draw_members()
        s = p.state
        self.status.configure(text=p.status_text(), foreground=STATUS_COLOURS.get(s.state, "#555"))
        self.reconnect_button.state(["!disabled" if p.can_reconnect else "disabled"])
        client = p.client
        unread = p.unread_total()
        self.master.title(f"{'(%d) ' % unread if unread else ''}spchat — "
                          f"{client.name}@{client.where}")

    def _draw_lines(self, lines: list, view: str, changed: bool = False) -> None:
        shown = self._shown
        t = self.text
        at_bottom = self._at_bottom  # as the user left it (a resize may hide it)
        t.configure(state="normal")
        if view == self._shown_view and not changed and lines[:len(shown)] == shown:
            for i in range(len(shown), len(lines)):
                self._insert(lines, i)
        else:
            # Something changed inside (a confirmation, an older page): draw
            # it all again, keeping the line that was at the top in sight.
            top_line = self._top_line() if view == self._shown_view else None
            t.delete("1.0", "end")
            for _, button in self._offer_buttons:
                button.destroy()
            self._offer_buttons = []
            self._starts = []
            for i in range(len(lines)):
                self._insert(lines, i)
            if top_line is not None and not at_bottom and top_line in lines:
                t.yview(self._starts[lines.index(top_line)])
                at_bottom = False
            else:
                at_bottom = True
        t.configure(state="disabled")
        arrived = self._arrived(lines, view)
        if any(line.pending for line in arrived):
            at_bottom = True  # what one has just typed is followed down
        self._unseen = 0 if at_bottom else self._unseen + sum(
            1 for line in arrived if line.kind == "message")
        if at_bottom:
            t.see("end")
        self._at_bottom = at_bottom
        self._shown, self._shown_view = list(lines), view
        self._draw_jump()

    def _arrived(self, lines: list, view: str) -> list:
        """The live lines drawn now for the first time (not an older page)."""
        if view != self._shown_view:
            return []
        before = set(self._shown)
        return [line for line in lines if line not in before and not line.history]

    def _draw_jump(self) -> None:
        """"N new messages below": over the text's corner while the user reads
        higher up and lines come in."""
        n = self._unseen
        if not n:
            self.jump_button.place_forget()
            return
        self.jump_button.configure(
            text=f"↓ {n} new message{'s' if n != 1 else ''} below — jump to latest")
        self.jump_button.place(in_=self.text, relx=1.0, rely=1.0, x=-10, y=-8, anchor="se")

    def _resized(self, event) -> None:
        if self._at_bottom:  # the latest line stays in sight
            self.text.see("end")

    def jump_to_latest(self) -> None:
        self.text.see("end")
        self._at_bottom, self._unseen = True, 0
        self._draw_jump()

    def _top_line(self):
        """The drawn Line at the top of the visible text, if any."""
        top = self.text.index("@0,0")
        for i in range(len(self._starts) - 1, -1, -1):
            if self.text.compare(self._starts[i], "<=", top):
                return self._shown[i]
        return self._shown[0] if self._shown else None

    def _insert(self, lines: list, i: int) -> None:
        line, t, p = lines[i], self.text, self.presenter
        if i and lines[i - 1].history and not line.history:
            t.insert("end", "— earlier messages above —\n", ("separator",))
        day = p.day_break(lines[i - 1] if i else None, line)
        if day is not None:
            t.insert("end", f"{day}\n", ("day",))
        self._starts.append(t.index("end-1c"))
        time_stamp = p.stamp(line)
        # A dated stamp is wider: its wrapped lines start further in.
        base = ("line" if time_stamp == line.time else "dated",
                *(("history",) if line.history else ()))
        t.insert("end", f"{time_stamp}  ", ("time", *base))
        if line.kind == "message":
            colour_tag = "colour" + line.colour
            t.tag_configure(colour_tag, foreground=line.colour)
            extra = ("own",) if line.own else ()
            name = display_order(line.sender) + (" (you)" if line.own else "")
            t.insert("end", name, ("sender", colour_tag, *extra, *base))
            body = ("pending",) if line.pending else ("mention",) if line.mention else ()
            start = t.index("end-1c")
            said = f": {display_order(line.text)}"
            self._insert_text(said, (*body, *extra, *base))
            if line.mention:
                self._mark_mentions(start, said)
            if line.pending:
                t.insert("end", f"  ({self.presenter.pending_note()})",
                         ("pending", "notice", "line", *extra))
        elif line.kind == "offer":
            self._insert_offer(line, base)
        elif line.kind == "notice":
            self._insert_text(f"* {display_order(line.text)}", (NOTICE_STYLES.get(line.notice, "notice"), *base))
        else:
            self._insert_text(f"! {display_order(line.text)}", ("error", "line"))
        t.insert("end", "\n")

    def _insert_text(self, text: str, tags: tuple) -> None:
        """Text that may span lines: every line after the first is indented
        and marked, never at the left edge where a time stamp would be."""
        first, *more = text.split("\n")
        t = self.text
        t.insert("end", first, tags)
        for part in more:
            t.insert("end", "\n", tags)
            t.insert("end", CONTINUATION_MARK, ("continuation", "continuation_mark", *tags))
            t.insert("end", part, ("continuation", *tags))

    def _mark_mentions(self, start: str, text: str) -> None:
        """My name, where a line says it, stands out of the line."""
        t = self.text
        for first, last in mention_spans(text, self.presenter.client.name):
            # Continuation marks were put in after each newline: count them in.
            extra = len(CONTINUATION_MARK) * text.count("\n", 0, first)
            t.tag_add("mention_name", f"{start} + {first + extra} chars",
                      f"{start} + {last + extra} chars")

    def _insert_offer(self, line, base: tuple) -> None:
        """"alice shares talk.mp4 (12.0 MiB) [Download]": the button in the text."""
        t = self.text
        colour_tag = "colour" + line.colour
        t.tag_configure(colour_tag, foreground=line.colour)
        t.insert("end", "⇩ ", ("offer", *base))
        name = display_order(line.sender) + (" (you)" if line.own else "")
        t.insert("end", name, ("offer", "sender", colour_tag, *base))
        self._insert_text(f" {display_order(line.text)}  ", ("offer", *base))
        if line.own:  # nothing to download; a file still shared can be stopped
            if line.download == "sharing":
                self._offer_button(line.file, "Stop sharing", self.controller.unshare)
            return
        label = {"running": "Downloading…", "saved": "Saved"}.get(line.download, "Download")
        button = self._offer_button(line.file, label, self.controller.download)
        if line.download in ("running", "saved"):
            button.state(["disabled"])

    def _offer_button(self, file_id: str, label: str, act):
        """A button in the text, after an offer; ``act(file_id)`` when pressed."""
        button = ttk.Button(self.text, text=label, style="Offer.TButton", cursor="hand2",
                            command=partial(act, file_id))
        self.text.window_create("end", window=button, padx=2, align="center")
        self._offer_buttons.append((file_id, button))
        return button

    def offer_buttons(self, file_id: str) -> list:
        """The Download buttons shown for a file (for tests, and for focus)."""
        return [b for f, b in self._offer_buttons if f == file_id]

    def _draw_downloads(self, rows: list) -> None:
        self.download_bar.draw(rows)
        if rows and not self.downloads.winfo_manager():
            self.downloads.pack(fill="x", side="bottom", before=self.panes)
        elif not rows:
            self.downloads.pack_forget()

    def _draw_conversations(self, conversations: list, active: str) -> None:
        if (conversations, active) == self._conversations_shown:
            return
        self._conversations_shown = (conversations, active)
        tree = self.room_list
        tree.delete(*tree.get_children())
        self._conversation_views = [c.view for c in conversations]
        for i, c in enumerate(conversations):
            name, badge = conversation_label(c)
            tree.insert("", "end", iid=str(i), text=display_order(name), values=(badge,),
                        tags=conversation_tags(c))
        if active in self._conversation_views:
            row = str(self._conversation_views.index(active))
            tree.selection_set(row)
            tree.see(row)
        # Tk tells of this selection later, as of a click: by then the user
        # may have opened another conversation, which it must not undo.
        self._drawn_selection = tree.selection()

    def _draw_members(self) -> None:
        """The member list: only the rows that changed since it was last
        drawn (a join in a room of thousands is one row, not thousands)."""
        p = self.presenter
        members = p.member_list()
        version = members.version if members is not None else 0
        drawn = (members, version, p.members_stale)
        if self._members_drawn == drawn:
            return
        changes = None
        last = self._members_drawn
        if last is not None and last[0] is members is not None and last[2] == drawn[2]:
            changes = members.changes_since(last[1])
        self._members_drawn = drawn
        if changes is None:  # another list, too far behind, or greyed: all again
            self.members.delete(0, "end")
            self._members_shown = []
            changes = [("insert", row, m) for row, m in
                       enumerate(members.ranked() if members is not None else ())]
        for change in changes:
            row = change[1]
            if change[0] == "remove":
                self.members.delete(row)
                del self._members_shown[row]
            else:
                self._insert_member(row, p.member_row(change[2]))

    def _insert_member(self, index: int, row) -> None:
        notes = [note for note in (row.role if row.role != "member" else "",
                                   row.state if row.state != "online" else "") if note]
        label = (f"● {display_order(row.name)}" + (" (you)" if row.me else "")
                 + (f" — {', '.join(notes)}" if notes else ""))
        self.members.insert(index, label)
        # While reconnecting nobody's state is known: none shows as online.
        colour = STALE_COLOUR if self.presenter.members_stale else STATE_COLOURS.get(row.state)
        self.members.itemconfigure(index, foreground=colour or "#333")
        self._members_shown.insert(index, row)

    # --- what the user does --------------------------------------------------------------

    def _connect_clicked(self) -> None:
        f = self.fields
        self.controller.submit(f["host"].get(), f["port"].get(), f["name"].get(),
                               f["password"].get(), self.register.get())

    def _send_clicked(self) -> None:
        text = self.entry.value()
        if text.strip() and self.controller.send(text) is not False:
            # Only what was taken goes: a refused text stays to be fixed.
            if self.entry.value() == text:
                self.entry.sent(text)

    def _completion_names(self) -> list[str]:
        return self.presenter.completion_names() if self.presenter is not None else []

    def _join_clicked(self) -> None:
        if self.controller.join(self.join_entry.get(), self.join_private.get()) is False:
            return  # refused as typed (said in the conversation): kept to be fixed
        self.join_entry.delete(0, "end")
        self.join_entry.insert(0, "#")
        self.join_private.set(False)

    def _share_clicked(self) -> None:
        """Share file…: the picker (one at a time), not a modal dialog."""
        if self.picker is not None and self.picker.is_open():
            self.picker.top.lift()
            return
        self.picker = FilePicker(self.master, self._picker_folder, self._file_chosen)

    def _file_chosen(self, path: Path) -> None:
        self._picker_folder = path.parent
        self.controller.share(str(path))

    def _conversation_selected(self) -> None:
        """A click (or an arrow key) in the room list opens that conversation."""
        rows = self.room_list.selection()
        if rows == self._drawn_selection:
            return  # drawn, not chosen
        view = self._view_at(rows)
        if view is not None and self.presenter is not None and view != self.presenter.active:
            self.controller.open(view)

    def _view_at(self, rows) -> str | None:
        rows = list(rows)
        if len(rows) != 1 or not rows[0]:
            return None
        return self._conversation_views[int(rows[0])]

    def _conversation_menu(self, event) -> None:
        view = self._view_at([self.room_list.identify_row(event.y)])
        if view is not None and self.presenter is not None:
            self._popup(event, self.presenter.conversation_actions(view),
                        lambda action: self.controller.act_on_conversation(view, action))

    def _member_at(self, y: int):
        """The member row drawn at height ``y`` of the list, if any."""
        index = self.members.nearest(y)
        box = self.members.bbox(index) if 0 <= index < len(self._members_shown) else None
        if box is None or not box[1] <= y < box[1] + box[3]:
            return None
        self.members.selection_clear(0, "end")  # keep the state colours readable
        return self._members_shown[index]

    def _member_double_clicked(self, event) -> None:
        row = self._member_at(event.y)
        if row is not None and not row.me:
            self.controller.open(row.name)
            self.entry.focus_set()

    def _member_menu(self, event) -> None:
        row = self._member_at(event.y)
        if row is not None and self.presenter is not None:
            self._popup(event, self.presenter.member_actions(row),
                        lambda action: self.controller.act_on_member(row.name, action))

    def _popup(self, event, actions: list, act) -> None:
        """The context menu of ``actions`` at the pointer; ``act`` gets the one chosen."""
        if not actions:
            return
        menu = self.menu
        menu.delete(0, "end")
        for i, action in enumerate(actions):
            if i and actions[i - 1].op == "message":  # talking, then moderating
                menu.add_separator()
            menu.add_command(label=action.label, command=partial(act, action))
        menu.tk_popup(event.x_root, event.y_root)

    def _scrollbar_moved(self, *args) -> None:
        self.text.yview(*args)
        self._note_position()
        self._check_top()

    def _note_position(self) -> None:
        """The user scrolled: at the bottom still, or reading further up?"""
        self._at_bottom = self.text.yview()[1] >= 0.999
        if self._at_bottom and self._unseen:
            self._unseen = 0  # read down to them
            self._draw_jump()

    def _check_top(self) -> None:
        if self.text.yview()[0] <= 0.0:
            self.controller.reached_top()
