"""Driving the chat window's room list and context menus as a user does:
clicks and right-clicks where a row is drawn, a click on a menu entry."""


def conversation_rows(window):
    """The room list as shown: (name, badge) of each row, in order."""
    tree = window.room_list
    return [(tree.item(row, "text"), tree.set(row, "badge")) for row in tree.get_children()]


def _middle(box):
    x, y, width, height = box
    return x + min(10, width // 2), y + height // 2


def _press(widget, button, x, y):
    widget.event_generate(f"<ButtonPress-{button}>", x=x, y=y,
                          rootx=widget.winfo_rootx() + x, rooty=widget.winfo_rooty() + y)


def click_conversation(window, index):
    """A click on a row of the room list."""
    tree = window.room_list
    tree.update()  # laid out: the row has its place
    x, y = _middle(tree.bbox(tree.get_children()[index]))
    _press(tree, 1, x, y)
    tree.event_generate("<ButtonRelease-1>", x=x, y=y)
    tree.update()


def right_click_conversation(window, index):
    """A right-click on a row of the room list; returns the menu it posted."""
    tree = window.room_list
    tree.update()
    _press(tree, 3, *_middle(tree.bbox(tree.get_children()[index])))
    tree.update()
    return window.menu


def right_click_member(window, name):
    """A right-click on a name in the member list; returns the menu it posted."""
    members = window.members
    members.update()
    index = next(i for i, label in enumerate(members.get(0, "end"))
                 if label.startswith(f"● {name}"))
    _press(members, 3, *_middle(members.bbox(index)))
    members.update()
    return window.menu


def _commands(menu):
    last = menu.index("end")
    return [i for i in range(0 if last is None else last + 1) if menu.type(i) == "command"]


def menu_labels(menu):
    return [menu.entrycget(i, "label") for i in _commands(menu)]


def choose(menu, label):
    """A click on a posted menu's entry: Tk's own binding takes the menu
    down, then runs the entry's command (a menu not posted runs nothing)."""
    index = next(i for i in _commands(menu) if menu.entrycget(i, "label") == label)
    menu.activate(index)
    menu.tk.call("tk::MenuInvoke", menu, 1)
