"""The chat window's download bar (Tk): one row per download, above the entry.

A row is a progress bar, its line, and the buttons of its state: Cancel
while it runs; Open folder and Close once saved (and the folder's path in
a read-only entry, to be selected and copied, where nothing could open
it); Close once cancelled.  What the rows say is the presenter's
(``download_rows()``); the buttons go to the controller.
"""

from __future__ import annotations

from functools import partial
from tkinter import ttk


class _Row:
    def __init__(self, parent, key: int, controller):
        self.frame = ttk.Frame(parent)
        self.bar = ttk.Progressbar(self.frame, length=220, maximum=1000, mode="determinate")
        self.bar.pack(side="left", padx=(0, 8))
        self.buttons: dict[str, ttk.Button] = {}
        for label, act in (("Close", controller.close_download),
                           ("Open folder", controller.open_folder),
                           ("Cancel", controller.cancel_download)):
            self.buttons[label] = ttk.Button(self.frame, text=label, command=partial(act, key))
        self.folder = ttk.Entry(self.frame, width=36)  # a path to copy, when shown
        self.label = ttk.Label(self.frame, anchor="w")
        self.label.pack(side="left", fill="x", expand=True)
        self.frame.pack(fill="x", pady=1)
        self._drawn: tuple | None = None  # (state, folder shown) the buttons are packed for

    def draw(self, row) -> None:
        self.bar.configure(value=round(1000 * row.fraction))
        self.label.configure(text=row.text)
        if self._drawn == (row.state, row.folder_shown):
            return
        self._drawn = (row.state, row.folder_shown)
        for widget in (*self.buttons.values(), self.folder):
            widget.pack_forget()
        shown = {"running": ["Cancel"], "saved": ["Close", "Open folder"],
                 "cancelled": ["Close"]}.get(row.state, [])
        for label in shown:  # packed from the right
            self.buttons[label].pack(side="right", padx=(4, 0), before=self.label)
        if row.folder_shown:
            self.folder.configure(state="normal")
            self.folder.delete(0, "end")
            self.folder.insert(0, row.folder)
            self.folder.configure(state="readonly")
            self.folder.pack(side="right", padx=(4, 0), before=self.label)

    def visible_buttons(self) -> list[str]:
        return [label for label, b in self.buttons.items() if b.winfo_manager()]


class DownloadBar:
    def __init__(self, frame, controller):
        self.frame, self.controller = frame, controller
        self.rows: dict[int, _Row] = {}

    def draw(self, rows: list) -> None:
        keys = {row.key for row in rows}
        for key in [k for k in self.rows if k not in keys]:
            self.rows.pop(key).frame.destroy()
        for row in rows:
            if row.key not in self.rows:
                self.rows[row.key] = _Row(self.frame, row.key, self.controller)
            self.rows[row.key].draw(row)

    def clear(self) -> None:
        for row in self.rows.values():
            row.frame.destroy()
        self.rows = {}
