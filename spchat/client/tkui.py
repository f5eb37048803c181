"""The desktop chat window (Tk). It draws and forwards; it decides nothing.

Three panels in one window, one shown at a time: the connect form, the trust
question, and the chat.  Tk runs inside the Twisted reactor through
``twisted.internet.tksupport``: no ``mainloop()`` and no modal dialog here,
either would stall the network.  Everything shown comes from the
``ChatPresenter`` (what to show) and ``DesktopController`` (which panel).
"""

from __future__ import annotations

import tkinter as tk
from tkinter import font as tkfont
from tkinter import ttk

from spchat.client.presenter import ROOM

STATE_COLOURS = {"online": "#1a7f37", "idle": "#9a6700", "reconnecting": "#8c8c8c"}
STATUS_COLOURS = {"connected": "#1a7f37", "connecting": "#555555",
                  "reconnecting": "#9a6700", "offline": "#b42318"}
NOTICE_STYLES = {"broadcast": "broadcast", "kicked": "alert", "banned": "alert",
                 "kick": "alert", "idle": "notice", "shutdown": "alert",
                 "saved": "saved"}


class ChatWindow:
    def __init__(self, master, controller):
        self.master, self.controller = master, controller
        self.presenter = None
        master.title("spchat")
        master.minsize(520, 360)
        master.geometry("880x560")
        self._base = tkfont.nametofont("TkDefaultFont")
        self._build_connect()
        self._build_trust()
        self._build_chat()
        self._panel = None
        self._shown: list = []  # the Line objects drawn, in order
        self._shown_view = None
        self._starts: list[str] = []  # Text index where each drawn Line starts
        self._tabs_shown = None
        self._offer_buttons: list = []  # (file id, button) in the text, in order
        self._download_rows: dict = {}  # key -> (frame, bar, label)
        self._members_shown = None

    # --- building ----------------------------------------------------------------

    def _build_connect(self) -> None:
        f = self.connect_frame = ttk.Frame(self.master, padding=24)
        ttk.Label(f, text="Connect to an spchat server",
                  font=(self._base.actual("family"), 14, "bold")).grid(
            row=0, column=0, columnspan=2, sticky="w", pady=(0, 12))
        self.fields = {}
        for row, (key, label) in enumerate((("host", "Server"), ("port", "Port"),
                                            ("name", "Name"), ("password", "Password")), 1):
            ttk.Label(f, text=label).grid(row=row, column=0, sticky="w", pady=3, padx=(0, 8))
            entry = ttk.Entry(f, width=32, show="•" if key == "password" else "")
            entry.grid(row=row, column=1, sticky="we", pady=3)
            entry.bind("<Return>", lambda e: self._connect_clicked())
            self.fields[key] = entry
        ttk.Label(f, text="(optional: only for a registered name)", foreground="#666").grid(
            row=5, column=1, sticky="w")
        self.register = tk.BooleanVar(value=False)
        ttk.Checkbutton(f, text="Register this name with the password",
                        variable=self.register).grid(row=6, column=1, sticky="w", pady=6)
        self.connect_button = ttk.Button(f, text="Connect", command=self._connect_clicked)
        self.connect_button.grid(row=7, column=1, sticky="w", pady=6)
        self.connect_message = ttk.Label(f, wraplength=460, justify="left")
        self.connect_message.grid(row=8, column=0, columnspan=2, sticky="w", pady=6)
        f.columnconfigure(1, weight=1)

    def _build_trust(self) -> None:
        f = self.trust_frame = ttk.Frame(self.master, padding=24)
        self.trust_title = ttk.Label(f, font=(self._base.actual("family"), 14, "bold"))
        self.trust_title.pack(anchor="w", pady=(0, 10))
        ttk.Label(f, text="Server key fingerprint:").pack(anchor="w")
        # An entry, read-only, so the fingerprint can be selected and copied.
        self.trust_fingerprint = ttk.Entry(f, width=72, font=("TkFixedFont", 10))
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
        self.tab_bar = ttk.Frame(f, padding=(6, 6, 6, 0))
        self.tab_bar.pack(fill="x")
        self.active_tab = tk.StringVar(value=ROOM)

        # Packed before the panes, so a small window shrinks the text, not these.
        bar = ttk.Frame(f, padding=6)
        bar.pack(fill="x", side="bottom")
        self.status = ttk.Label(bar)
        self.status.pack(side="left", fill="x", expand=True)
        self.leave_button = ttk.Button(bar, text="Leave", command=self.controller.leave)
        self.leave_button.pack(side="right")
        self.reconnect_button = ttk.Button(bar, text="Reconnect now",
                                           command=self.controller.reconnect)
        self.reconnect_button.pack(side="right", padx=4)

        entry_row = ttk.Frame(f, padding=(6, 0))
        entry_row.pack(fill="x", side="bottom")
        # Downloads under way, one row each (a bar and its line), above the
        # entry; packed only while there is one.
        self.downloads = ttk.Frame(f, padding=(6, 0, 6, 4))
        self.entry = ttk.Entry(entry_row)
        self.entry.pack(side="left", fill="x", expand=True)
        self.entry.bind("<Return>", lambda e: self._send_clicked())
        ttk.Button(entry_row, text="Send", command=self._send_clicked).pack(side="left", padx=4)

        panes = self.panes = ttk.PanedWindow(f, orient="horizontal")
        panes.pack(fill="both", expand=True, padx=6, pady=6)
        left = ttk.Frame(panes)
        self.text = tk.Text(left, wrap="word", state="disabled", padx=8, pady=6,
                            relief="flat", highlightthickness=1, highlightbackground="#ccc",
                            cursor="arrow", spacing1=2, font="TkDefaultFont")
        self.scroll = ttk.Scrollbar(left, command=self._scrollbar_moved)
        self.text.configure(yscrollcommand=self.scroll.set)
        self.scroll.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        # Older history is loaded when the user scrolls to the top (never by
        # itself: a short conversation is not a reason to fetch pages).
        for sequence in ("<Button-4>", "<MouseWheel>", "<Prior>", "<Control-Home>"):
            self.text.bind(sequence, lambda e: self.text.after_idle(self._check_top), add="+")
        panes.add(left, weight=4)

        right = ttk.Frame(panes)
        ttk.Label(right, text="Members", font=(self._base.actual("family"), 10, "bold")).pack(
            anchor="w", padx=4)
        self.members = tk.Listbox(right, activestyle="none", width=22, relief="flat",
                                  highlightthickness=1, highlightbackground="#ccc")
        self.members.pack(fill="both", expand=True)
        self.members.bind("<Double-Button-1>", self._member_double_clicked)
        ttk.Label(right, text="double-click a name to talk privately", foreground="#777",
                  wraplength=160).pack(anchor="w", padx=4)
        panes.add(right, weight=1)

        t, family = self.text, self._base.actual("family")
        size = self._base.actual("size") or 10
        # Wrapped lines start under the text, not under the time stamp.
        t.tag_configure("line", lmargin2=self._base.measure("00:00:00  "))
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
        ttk.Style(self.master).configure("Offer.TButton", padding=(6, 0))

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
            self.register.set(False)
        self.connect_message.configure(text=error, foreground="#b42318")
        self.connect_button.state(["!disabled"])
        self.master.title("spchat")
        self.status.configure(text="")  # nothing left from a chat that was left
        self.presenter = None
        self._show(self.connect_frame)
        empty = next((e for k, e in self.fields.items() if k != "password" and not e.get()), None)
        (empty or self.fields["password"]).focus_set()  # Return there connects

    def show_busy(self, text: str) -> None:
        self.connect_message.configure(text=text, foreground="#555555")
        self.connect_button.state(["disabled"])
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
        self._tabs_shown = self._members_shown = None
        for frame, _, _ in self._download_rows.values():  # a previous chat's
            frame.destroy()
        self._download_rows = {}
        self.fields["password"].delete(0, "end")  # not kept on screen
        self._show(self.chat_frame)
        self.refresh()
        self.entry.focus_set()

    # --- drawing the chat ----------------------------------------------------------------

    def refresh(self) -> None:
        p = self.presenter
        if p is None or self._panel is not self.chat_frame:
            return
        self._draw_lines(p.lines(), p.active)
        self._draw_downloads(p.download_rows())
        self._draw_tabs(p.conversations(), p.active)
        self._draw_members(p.member_rows())
        s = p.state
        self.status.configure(text=p.status_text(), foreground=STATUS_COLOURS.get(s.state, "#555"))
        self.reconnect_button.state(["!disabled" if p.can_reconnect else "disabled"])
        client = p.client
        unread = p.unread_total()
        self.master.title(f"{'(%d) ' % unread if unread else ''}spchat — "
                          f"{client.name}@{client.host}:{client.port}")

    def _draw_lines(self, lines: list, view: str) -> None:
        shown = self._shown
        t = self.text
        at_bottom = t.yview()[1] >= 0.999
        t.configure(state="normal")
        if view == self._shown_view and lines[:len(shown)] == shown:
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
        if at_bottom:
            t.see("end")
        self._shown, self._shown_view = list(lines), view

    def _top_line(self):
        """The drawn Line at the top of the visible text, if any."""
        top = self.text.index("@0,0")
        for i in range(len(self._starts) - 1, -1, -1):
            if self.text.compare(self._starts[i], "<=", top):
                return self._shown[i]
        return self._shown[0] if self._shown else None

    def _insert(self, lines: list, i: int) -> None:
        line, t = lines[i], self.text
        if i and lines[i - 1].history and not line.history:
            t.insert("end", "— earlier messages above —\n", ("separator",))
        self._starts.append(t.index("end-1c"))
        base = ("line", "history") if line.history else ("line",)
        t.insert("end", f"{line.time}  ", ("time", *base))
        if line.kind == "message":
            colour_tag = "colour" + line.colour
            t.tag_configure(colour_tag, foreground=line.colour)
            extra = ("own",) if line.own else ()
            name = f"{line.sender} (you)" if line.own else line.sender
            t.insert("end", name, ("sender", colour_tag, *extra, *base))
            body = ("pending",) if line.pending else ()
            t.insert("end", f": {line.text}", (*body, *extra, *base))
            if line.pending:
                t.insert("end", "  (sending…)", ("pending", "notice", "line", *extra))
        elif line.kind == "offer":
            self._insert_offer(line, base)
        elif line.kind == "notice":
            t.insert("end", f"* {line.text}", (NOTICE_STYLES.get(line.notice, "notice"), *base))
        else:
            t.insert("end", f"! {line.text}", ("error", "line"))
        t.insert("end", "\n")

    def _insert_offer(self, line, base: tuple) -> None:
        """"alice shares talk.mp4 (12.0 MiB) [Download]": the button in the text."""
        t = self.text
        colour_tag = "colour" + line.colour
        t.tag_configure(colour_tag, foreground=line.colour)
        t.insert("end", "⇩ ", ("offer", *base))
        name = f"{line.sender} (you)" if line.own else line.sender
        t.insert("end", name, ("offer", "sender", colour_tag, *base))
        t.insert("end", f" {line.text}  ", ("offer", *base))
        if line.own:
            return  # one's own offer: nothing to download
        label = {"running": "Downloading…", "saved": "Saved"}.get(line.download, "Download")
        button = ttk.Button(t, text=label, style="Offer.TButton", cursor="hand2",
                            command=lambda f=line.file: self.controller.download(f))
        if line.download in ("running", "saved"):
            button.state(["disabled"])
        t.window_create("end", window=button, padx=2, align="center")
        self._offer_buttons.append((line.file, button))

    def offer_buttons(self, file_id: str) -> list:
        """The Download buttons shown for a file (for tests, and for focus)."""
        return [b for f, b in self._offer_buttons if f == file_id]

    def _draw_downloads(self, rows: list) -> None:
        shown = self._download_rows
        for key in [k for k in shown if k not in {r.key for r in rows}]:
            shown.pop(key)[0].destroy()
        for row in rows:
            if row.key not in shown:
                frame = ttk.Frame(self.downloads)
                bar = ttk.Progressbar(frame, length=220, maximum=1000, mode="determinate")
                bar.pack(side="left", padx=(0, 8))
                label = ttk.Label(frame, anchor="w")
                label.pack(side="left", fill="x", expand=True)
                frame.pack(fill="x", pady=1)
                shown[row.key] = (frame, bar, label)
            _, bar, label = shown[row.key]
            bar.configure(value=round(1000 * row.fraction))
            label.configure(text=row.text)
        if shown and not self.downloads.winfo_manager():
            self.downloads.pack(fill="x", side="bottom", before=self.panes)
        elif not shown:
            self.downloads.pack_forget()

    def _draw_tabs(self, conversations: list, active: str) -> None:
        if (conversations, active) == self._tabs_shown:
            return
        self._tabs_shown = (conversations, active)
        for child in self.tab_bar.winfo_children():
            child.destroy()
        self.active_tab.set(active)
        for view, unread in conversations:
            label = "# " + view.lstrip("#") if view == ROOM else view
            if unread:
                label += f" ({unread})"
            ttk.Radiobutton(self.tab_bar, text=label, value=view, variable=self.active_tab,
                            style="Toolbutton", command=lambda v=view: self.controller.open(v),
                            ).pack(side="left", padx=(0, 4))

    def _draw_members(self, rows: list) -> None:
        if rows == self._members_shown:
            return
        self._members_shown = rows
        self.members.delete(0, "end")
        for name, state, me in rows:
            label = f"● {name}" + (" (you)" if me else "") + ("" if state == "online" else f" — {state}")
            self.members.insert("end", label)
            self.members.itemconfigure("end", foreground=STATE_COLOURS.get(state, "#333"))

    # --- what the user does --------------------------------------------------------------

    def _connect_clicked(self) -> None:
        f = self.fields
        self.controller.submit(f["host"].get(), f["port"].get(), f["name"].get(),
                               f["password"].get(), self.register.get())

    def _send_clicked(self) -> None:
        text = self.entry.get()
        if text.strip():
            self.entry.delete(0, "end")
            self.controller.send(text)

    def _member_double_clicked(self, event) -> None:
        index = self.members.nearest(event.y)
        if 0 <= index < len(self._members_shown or ()):
            name, _, me = self._members_shown[index]
            self.members.selection_clear(0, "end")  # keep the state colours readable
            if not me:
                self.controller.open(name)
                self.entry.focus_set()

    def _scrollbar_moved(self, *args) -> None:
        self.text.yview(*args)
        self._check_top()

    def _check_top(self) -> None:
        if self.text.yview()[0] <= 0.0:
            self.controller.reached_top()
