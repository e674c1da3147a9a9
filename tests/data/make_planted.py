"""Write tests/data/planted.csv: a small interaction log with a planted
sequential pattern, for the `recd eval` tests.

300 items in a ring; each of 80 users starts at a random item and walks
the ring, usually to the next item (item i is followed by item i+1), with
one jump in five to a random item. Popularity is flat by construction, so
a pipeline that learns "what follows what" from the stream (co-occurrence)
beats live popularity by a wide margin, and popularity is near chance
(K / 300). Deterministic: `python3 tests/data/make_planted.py` rewrites
the same file.
"""
import os
import random

ITEMS, USERS, STEPS = 300, 80, 25


def main():
    rng = random.Random(20261128)
    rows = []
    t0 = 1_700_000_000
    for u in range(1, USERS + 1):
        item = rng.randrange(ITEMS)
        seen = set()
        t = t0 + rng.randrange(86400 * 5)
        for _ in range(STEPS):
            while item in seen:
                item = (item + 1) % ITEMS
            seen.add(item)
            rows.append((u, "i%d" % item, rng.choice((3.5, 4, 4.5, 5)), t))
            t += rng.randrange(60, 3600)
            item = rng.randrange(ITEMS) if rng.random() < 0.2 else (item + 1) % ITEMS
    rows.sort(key=lambda r: (r[3], r[0]))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "planted.csv")
    with open(path, "w") as f:
        f.write("userId,itemId,rating,timestamp\n")
        for r in rows:
            f.write("%d,%s,%s,%d\n" % r)


if __name__ == "__main__":
    main()
