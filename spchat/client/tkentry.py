"""The chat window's message entry (Tk): a Text of a few lines, not an Entry.

Enter sends and Shift+Enter starts a new line (pasted newlines stay
newlines, not boxes); Up on the first line and Down on the last walk the
lines sent before; Tab completes a member name; Ctrl+A selects all.  What
to remember and complete is ``spchat.client.composer``'s.
"""

from __future__ import annotations

import tkinter as tk

from spchat.client.composer import LineHistory, NameCompleter

MAX_HEIGHT = 6  # lines: past that the entry scrolls


class MessageEntry(tk.Text):
    def __init__(self, master, on_send, names, **options):
        """``on_send()`` is Enter; ``names()`` the names Tab completes."""
        super().__init__(master, height=1, wrap="word", undo=True, relief="flat",
                         highlightthickness=1, highlightbackground="#aaa",
                         highlightcolor="#4a7ebb", padx=4, pady=3, **options)
        self.on_send, self.names = on_send, names
        self.history = LineHistory()
        self.completer = NameCompleter()
        self.bind("<Return>", self._enter)
        self.bind("<KP_Enter>", self._enter)
        self.bind("<Shift-Return>", self._new_line)
        self.bind("<Up>", self._up)
        self.bind("<Down>", self._down)
        self.bind("<Tab>", self._tab)
        self.bind("<Control-a>", self._select_all)
        self.bind("<<Modified>>", self._modified)

    # Entry-like access to the whole text.

    def value(self) -> str:
        return self.get("1.0", "end-1c")

    def set_value(self, text: str) -> None:
        self.delete("1.0", "end")
        self.insert("1.0", text)
        self.mark_set("insert", "end-1c")
        self.see("insert")

    def sent(self, text: str) -> None:
        """What was typed has been taken: remembered for Up, the entry emptied."""
        self.history.add(text)
        self.set_value("")

    # The keys.

    def _enter(self, event) -> str:
        self.on_send()
        return "break"  # no newline

    def _new_line(self, event) -> str:
        self.insert("insert", "\n")
        self.see("insert")
        return "break"

    def _up(self, event):
        if self.compare("insert linestart", "!=", "1.0"):
            return None  # moving up inside the text
        recalled = self.history.older(self.value())
        if recalled is not None:
            self.set_value(recalled)
        return "break"

    def _down(self, event):
        if self.compare("insert lineend", "!=", "end-1c"):
            return None
        recalled = self.history.newer()
        if recalled is not None:
            self.set_value(recalled)
        return "break"

    def _tab(self, event) -> str:
        before = self.get("insert linestart", "insert")
        done = self.completer.complete(before, self.names())
        if done is not None:
            start, text = done
            self.delete(f"insert linestart + {start} chars", "insert")
            self.insert("insert", text)
        return "break"  # neither a tab character nor a focus change

    def _select_all(self, event) -> str:
        self.tag_add("sel", "1.0", "end-1c")
        self.mark_set("insert", "end-1c")
        return "break"

    def _modified(self, event) -> None:
        """Grow with the text, up to MAX_HEIGHT lines."""
        if not self.edit_modified():
            return
        self.edit_modified(False)
        counted = self.count("1.0", "end-1c", "displaylines")
        lines = (counted[0] if isinstance(counted, tuple) else counted or 0) + 1
        height = max(1, min(MAX_HEIGHT, lines))
        if int(self.cget("height")) != height:
            self.configure(height=height)
