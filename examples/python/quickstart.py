#!/usr/bin/python3
"""quickstart.py - a first conversation with a running recd server.

    ./recd serve --data ./data --listen 127.0.0.1:7700 &
    /usr/bin/python3 examples/python/quickstart.py [ADDRESS]

ADDRESS is "host:port" or a Unix socket path (default: $RECD_ADDR, else
127.0.0.1:7700). Puts a tiny catalogue with content vectors, sends a few
events, asks for recommendations and similar items, then clicks and asks again.
"""
import os
import sys

from recd_client import Client, RecdError, f32

CATALOGUE = [
    # id, title, genre, content vector: the 8 axes of the demo catalogue that
# `make run` loads (comedy, drama, action, horror, romance, scifi, docs,
# kids), so these items sit beside it in the same "content" space
    ("qs-m1", "Laugh Track", "comedy", [0.9, 0.1, 0, 0, 0, 0.0, 0, 0]),
    ("qs-m2", "Pratfall", "comedy", [0.8, 0.2, 0, 0, 0, 0.1, 0, 0]),
    ("qs-m3", "Slapstick II", "comedy", [0.85, 0.0, 0, 0, 0, 0.15, 0, 0]),
    ("qs-m4", "Quiet Rooms", "drama", [0.1, 0.9, 0, 0, 0, 0.0, 0, 0]),
    ("qs-m5", "Long Winter", "drama", [0.0, 0.95, 0, 0, 0, 0.1, 0, 0]),
    ("qs-m6", "Orbit", "scifi", [0.0, 0.1, 0, 0, 0, 0.9, 0, 0]),
    ("qs-m7", "Red Planet", "scifi", [0.1, 0.0, 0, 0, 0, 0.95, 0, 0]),
    ("qs-m8", "Time Loop", "scifi", [0.2, 0.1, 0, 0, 0, 0.8, 0, 0]),
]


def show(c, title, answer):
    print("%s  (pipeline %s, rec_id %s)" % (title, answer["pipeline"], answer["rec_id"]))
    for i, hit in enumerate(answer["items"], 1):
        item = c.call("item.get", hit["id"])
        name = item["props"].get("title") if item else None
        print("  %2d. %-14s %-14s %8.3f" % (i, hit["id"], name or "?", hit["score"]))


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RECD_ADDR", "127.0.0.1:7700")
    with Client(address) as c:
        hello = c.call("sys.hello")
        print("connected to %s %s (api %s)" % (hello["server"], hello["version"], hello["api"]))

        # Items: vectors as arrays of numbers, or compactly as bin float32 LE.
        items = [{"id": i, "props": {"title": t, "genre": g},
                  "vectors": {"content": f32(v) if n % 2 else v}}
                 for n, (i, t, g, v) in enumerate(CATALOGUE)]
        print("items written:", c.call("item.put", *items))

        # Some history from other users: comedy fans and scifi fans.
        events = []
        for u in range(4):
            for m in ("qs-m1", "qs-m2", "qs-m3"):
                events.append({"user": "qs-fan-c%d" % u, "item": m, "type": "click"})
            for m in ("qs-m6", "qs-m7", "qs-m8"):
                events.append({"user": "qs-fan-s%d" % u, "item": m, "type": "view"})
        events.append({"user": "qs-fan-s0", "item": "qs-m7", "type": "purchase", "value": 9.9})
        print("events stored:", c.call("event.add", *events))

        show(c, "\nitems like Orbit:", c.call("rec.similar", {"item": "qs-m6", "n": 3}))
        before = c.call("rec.recommend", {"user": "qs-alice", "n": 4})
        show(c, "\nrecommended for qs-alice (new user):", before)

        # Alice clicks two comedies; the events carry the rec_id they came from.
        clicks = [{"user": "qs-alice", "item": m, "type": "click", "rec_id": before["rec_id"]}
                  for m in ("qs-m1", "qs-m2")]
        print("\nqs-alice clicks qs-m1 and qs-m2:", c.call("event.add", *clicks), "stored")
        show(c, "recommended for qs-alice now:", c.call("rec.recommend", {"user": "qs-alice", "n": 4}))

        history = c.call("user.get", "qs-alice")["history"]
        print("\nqs-alice's history:", ", ".join("%s %s" % (h["type"], h["item"]) for h in history))

        try:
            c.call("rec.similar", {"item": "no-such-item"})
        except RecdError as e:
            print("errors come back by name:", e)


if __name__ == "__main__":
    main()
