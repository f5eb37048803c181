"""What release 0.1.0 wrote into tests/fixtures/spchat-0.1.0.db (see
tests/fixtures/README.rst): the file, and the lines it holds."""

from pathlib import Path

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "spchat-0.1.0.db"

# The lobby, in the order it was sent (seq 1 to 30): (sender, text).
LOBBY = [
    ("alice", "hi all"),
    ("Bob", "hey alice"),
    ("Carol", "good morning"),
    ("alice", "anyone tried the new build?"),
    ("Bob", "yes, it starts fine here"),
    ("Carol", "same here"),
    ("alice", "great"),
    ("Bob", "the reconnect is much quicker now"),
    ("Carol", "shopping list:\n- milk\n- bread\n- coffee"),
    ("alice", "ha, thanks Carol"),
    ("Bob", "Grüße ☕"),
    ("Carol", "Grüße zurück"),
    ("alice", "lunch at noon?"),
    ("Bob", "sure"),
    ("Carol", "count me in"),
    ("alice", "the usual place"),
    ("Bob", "ok"),
    ("Carol", "I'll book a table"),
    ("alice", "thanks"),
    ("Bob", "brb"),
    ("Carol", "np"),
    ("alice", "back to work then"),
    ("Bob", "back"),
    ("Carol", "welcome back"),
    ("alice", "quotes \"double\" and 'single' and a tab\there"),
    ("Bob", "emoji test 😀👍"),
    ("Carol", "see you at noon"),
    ("alice", "see you"),
    ("Bob", "bye for now"),
    ("Carol", "last message of the morning"),
]

# Then the direct messages (old seq 31 to 35): (sender, to, text).
DIRECT = [
    ("alice", "Bob", "psst, Bob"),
    ("Bob", "alice", "what is it?"),
    ("alice", "Bob", "can you review my patch?"),
    ("Bob", "alice", "sure, after lunch"),
    ("Carol", "alice", "the table is booked for 12:00"),
]
