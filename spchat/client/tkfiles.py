"""The window's file picker (Tk): a Toplevel, not a modal dialog.

The folder's path, its listing (folders first, marked with "/"), a name
entry, and Up, Cancel and Share.  A double-click (or Return) on a folder
opens it, on a file shares it; a name or a path typed works too.  It
neither grabs the pointer nor waits for itself to close: the reactor keeps
turning and the chat goes on behind it (see ``spchat.client.filechooser``
for why not ``tkinter.filedialog``).
"""

from __future__ import annotations

import tkinter as tk
from pathlib import Path
from tkinter import ttk

from spchat.client.filechooser import FileChooser
from spchat.p2p.report import size_text


class FilePicker:
    def __init__(self, master, start: Path, on_chosen, title: str = "Share a file"):
        """``on_chosen(path)`` once a file is chosen (the picker then closes)."""
        self.chooser = FileChooser(start)
        self.on_chosen = on_chosen
        top = self.top = tk.Toplevel(master)
        top.title(f"{title} — spchat")
        top.geometry("560x420")
        top.minsize(360, 260)
        top.protocol("WM_DELETE_WINDOW", self.cancel)
        f = ttk.Frame(top, padding=10)
        f.pack(fill="both", expand=True)
        self.folder_label = ttk.Label(f, anchor="w", justify="left")
        self.folder_label.pack(fill="x", side="top", pady=(0, 6))
        # A deep folder's path wraps instead of being cut off.
        self.folder_label.bind("<Configure>", lambda e: self.folder_label.configure(
            wraplength=max(e.width - 4, 100)))
        buttons = ttk.Frame(f)
        buttons.pack(fill="x", side="bottom", pady=(6, 0))
        self.up_button = ttk.Button(buttons, text="↑ Up", command=self.up)
        self.up_button.pack(side="left")
        self.share_button = ttk.Button(buttons, text="Share", command=self.share_clicked)
        self.share_button.pack(side="right")
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self.cancel)
        self.cancel_button.pack(side="right", padx=6)
        self.problem = ttk.Label(f, foreground="#b42318", anchor="w")
        self.problem.pack(fill="x", side="bottom")
        name_row = ttk.Frame(f)
        name_row.pack(fill="x", side="bottom", pady=(6, 0))
        ttk.Label(name_row, text="File:").pack(side="left", padx=(0, 6))
        self.name = ttk.Entry(name_row)
        self.name.pack(side="left", fill="x", expand=True)
        self.name.bind("<Return>", lambda e: self.share_clicked())
        self.listing = tk.Listbox(f, activestyle="dotbox", relief="flat", highlightthickness=1,
                                  highlightbackground="#ccc", exportselection=False)
        scroll = ttk.Scrollbar(f, command=self.listing.yview)
        self.listing.configure(yscrollcommand=scroll.set)
        scroll.pack(side="right", fill="y")
        self.listing.pack(fill="both", expand=True)
        self.listing.bind("<<ListboxSelect>>", lambda e: self._selected())
        self.listing.bind("<Double-Button-1>", lambda e: self.open_selected())
        self.listing.bind("<Return>", lambda e: self.open_selected())
        self.listing.bind("<BackSpace>", lambda e: self.up())
        top.bind("<Escape>", lambda e: self.cancel())
        self._draw()
        self.listing.focus_set()

    def _draw(self) -> None:
        c = self.chooser
        self.folder_label.configure(text=f"In {c.folder}")
        self.listing.delete(0, "end")
        for item in c.items:
            self.listing.insert("end", f"{item.name}/" if item.folder
                                else f"{item.name}    ({size_text(item.size)})")
        if not c.items:
            self.listing.insert("end", "(nothing here)")
            self.listing.itemconfigure(0, foreground="#8c8c8c")
        self.problem.configure(text=c.problem)

    def _item(self):
        rows = self.listing.curselection()
        items = self.chooser.items
        return items[rows[0]] if rows and rows[0] < len(items) else None

    def _selected(self) -> None:
        item = self._item()
        if item is not None and not item.folder:
            self.name.delete(0, "end")
            self.name.insert(0, item.name)

    def open_selected(self) -> None:
        """A double-click: a folder opens, a file is shared."""
        item = self._item()
        if item is not None:
            self._choose(item.name)

    def share_clicked(self) -> None:
        self._choose(self.name.get())

    def _choose(self, typed: str) -> None:
        path = self.chooser.choose(typed)
        if path is None:
            if not self.chooser.problem:  # a folder was opened
                self.name.delete(0, "end")
            self._draw()
            return
        self.top.destroy()
        self.on_chosen(path)

    def up(self) -> None:
        self.chooser.up()
        self._draw()

    def cancel(self) -> None:
        self.top.destroy()

    def is_open(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False
