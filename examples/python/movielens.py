#!/usr/bin/python3
"""movielens.py - MovieLens in recd: load it, ask, click, see the change.

    ./recd serve --data /tmp/ml &
    /usr/bin/python3 examples/python/movielens.py DIR [ADDRESS] [--limit N] [--user ID]
                                                  [--types graded|click] [--load-only]

DIR is a MovieLens folder in the ml-latest format (ml-latest-small, or
anything with the same columns); ADDRESS is "host:port" or a Unix socket
path (default: $RECD_ADDR, else 127.0.0.1:7700). --limit N loads only the
first N ratings of ratings.csv (quick runs); --user ID follows that user;
--types click makes every rating a click (default graded: by rating, below);
--load-only stops after loading.
The server should run the project's scripts and policies (the default of
`recd serve`) on a fresh data folder: a folder's "content" space keeps the
vector size it first saw, and the demo catalogue of `make run` has 8. On
ml-latest-small (100,836 ratings, 9,742 movies) the load takes a few
seconds; load a folder once (a second load adds every rating again).

The data: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens
Datasets: History and Context. ACM Transactions on Interactive Intelligent
Systems (TiiS) 5, 4: 19:1-19:19. https://doi.org/10.1145/2827872
GroupLens publishes it for non-commercial use; read its README.txt.

What goes in: the mapping of docs/movielens.md, the same as
`recd serve --movielens DIR` and examples/node/movielens.js load:

  movies.csv  (movieId,title,genres)   ->  items "movie:<movieId>", props
      {title, genres = [...], year} (year when the title ends in "(YYYY)")
      and a 36-dimension "content" vector:
        dims 0..19   1 for each of the movie's genres, in the order of
                     GENRES below (a genre outside the list is ignored);
        dims 20..35  the movie's tags from tags.csv: every tag is cut
                     into ASCII letter/digit runs ([A-Za-z0-9]+),
                     lower-cased; each word w, with h = rec_hash_stable(w)
                     (see hash_stable), adds 1 (-1 when the top bit of h
                     is set) to dimension 20 + h % 16;
      the tag block is scaled to unit length (so all tags together weigh
      as much as one genre), then the whole vector. A movie with neither
      genres nor tags gets no vector.
  ratings.csv (userId,movieId,rating,timestamp)  ->  events of user
      "user:<userId>" on "movie:<movieId>", value = the rating, ts =
      timestamp, of type (--types graded, the default):
        rating >= 4     "click"    (weight 2: a positive signal)
        2.5 .. 3.5      "view"     (weight 1: watched, lukewarm)
        <= 2            "dislike"  (weight -4: negative, no model learns from it)
      or, with --types click, every rating a "click" (as recd eval
      replays them); sent in (timestamp, userId, movieId) order, 1,000
      events a request, 8 requests in flight (pipelined, see
      recd_client.Client.pipeline).
  tags.csv    (userId,movieId,tag,timestamp, optional)  ->  the tag dims.

What comes out: one user's top 10 (the user with the most positive
ratings among those with at most 100 ratings, or --user ID); then five
clicks on core movies of the genre that user has liked least (see
pick_genre); then the new top 10, what entered and left it, and the
machine-readable line

    genre share before: 0.10 after: 0.60

(the share of the top 10 carrying that genre). examples/node/movielens.js
does the same from Node.js; tests/e2e/test_examples.py runs both.
"""
import argparse
import csv
import math
import os
import re
import sys
import time
from collections import Counter, defaultdict

from recd_client import Client, RecdError, f32

# The 20 genres of MovieLens (README.txt of ml-latest-small), one
# dimension each, in this order.
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX",
          "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western", "(no genres listed)"]
GENRE_DIM = {g: i for i, g in enumerate(GENRES)}
TAG_DIMS = 16           # hashed tag words: dims 20..35
NOT_A_TASTE = {"IMAX", "(no genres listed)"}   # never the genre to explore

BATCH = 1000            # events per event.add request
WINDOW = 8              # requests in flight while loading
TOP = 10                # length of the lists shown
CLICKS = 5              # clicks sent in the new genre
SMALL_USER = 100        # the default user has at most this many ratings
MIN_FANS = 5            # a movie to click was liked by this many users


# -- the content vector -------------------------------------------------------

def hash_stable(data):
    """rec_hash_stable (core/engine/hash.h) of bytes: 64-bit FNV-1a, then a
    multiply-xorshift finish."""
    m = (1 << 64) - 1
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & m
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    return h ^ (h >> 33)


def tag_tokens(tag):
    return [t.lower() for t in re.findall(r"[A-Za-z0-9]+", tag)]


def unit(block):
    n = math.sqrt(sum(x * x for x in block))
    return [x / n for x in block] if n > 0 else block


def content_vector(genres, tokens):
    """The 36 floats described in the header, or None when all are zero."""
    g = [0.0] * len(GENRES)
    for name in genres:
        if name in GENRE_DIM:
            g[GENRE_DIM[name]] = 1.0
    t = [0.0] * TAG_DIMS
    for tok in tokens:
        h = hash_stable(tok.encode("ascii"))
        t[h % TAG_DIMS] += -1.0 if h >> 63 else 1.0
    v = g + unit(t)
    if not any(v):
        return None
    return unit(v)


def movie_props(title, genres):
    """{title, genres, year}: year when the title ends in "(YYYY)"."""
    props = {"title": title, "genres": genres}
    m = re.search(r"\((\d{4})\)[ \t]*$", title)
    if m:
        props["year"] = int(m.group(1))
    return props


def event_type(rating, types="graded"):
    if types == "click" or rating >= 4.0:
        return "click"
    if rating >= 2.5:
        return "view"
    return "dislike"


# -- reading the folder -------------------------------------------------------

def rows(path, *columns):
    """The rows of a CSV file with a header line naming columns, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError("%s has no column %s" % (path, ", ".join(missing)))
        yield from reader


def read_folder(folder, limit):
    movies = {}                                   # movieId -> (title, [genres])
    for r in rows(os.path.join(folder, "movies.csv"), "movieId", "title", "genres"):
        genres = [g for g in r["genres"].split("|") if g]
        movies[int(r["movieId"])] = (r["title"], genres)
    tokens = defaultdict(list)                    # movieId -> tag tokens
    tags_path = os.path.join(folder, "tags.csv")
    ntags = 0
    if os.path.exists(tags_path):
        for r in rows(tags_path, "movieId", "tag"):
            tokens[int(r["movieId"])].extend(tag_tokens(r["tag"]))
            ntags += 1
    ratings = []                                  # (ts, userId, movieId, rating)
    for r in rows(os.path.join(folder, "ratings.csv"), "userId", "movieId", "rating",
                  "timestamp"):
        if limit is not None and len(ratings) >= limit:
            break
        ratings.append((int(float(r["timestamp"])), int(r["userId"]),
                        int(r["movieId"]), float(r["rating"])))
    ratings.sort()                                # replayed in time order
    return movies, tokens, ntags, ratings


# -- loading -------------------------------------------------------------------

def item_id(movie):
    return "movie:%d" % movie


def user_id(user):
    return "user:%d" % user


def movie_of(item, movies):
    """(title, genres) of an item id, ("?", []) for an item not from DIR."""
    if isinstance(item, str) and item.startswith("movie:") and item[6:].isdigit():
        return movies.get(int(item[6:]), ("?", []))
    return (str(item), [])


def progress(text):
    """A progress line on stderr, rewritten in place (on a terminal only);
    "" erases it."""
    if sys.stderr.isatty():
        sys.stderr.write("\r%-70s\r%s" % ("", text))
        sys.stderr.flush()


def put_movies(c, movies, tokens):
    calls, batch, with_vec = [], [], 0
    for movie, (title, genres) in movies.items():
        item = {"id": item_id(movie), "props": movie_props(title, genres)}
        v = content_vector(genres, tokens.get(movie, ()))
        if v is not None:
            item["vectors"] = {"content": f32(v)}     # bin of float32: compact
            with_vec += 1
        batch.append(item)
        if len(batch) == 500:
            calls.append(("item.put", batch))
            batch = []
    if batch:
        calls.append(("item.put", batch))
    written = sum(c.pipeline(calls, window=WINDOW))
    return written, with_vec


def add_ratings(c, ratings, types):
    """event.add in pipelined batches; returns (stored, Counter of types)."""
    counts, stored, t0 = Counter(), 0, time.monotonic()
    chunk = BATCH * WINDOW * 4               # events between progress lines
    for start in range(0, len(ratings), chunk):
        calls = []
        for b in range(start, min(start + chunk, len(ratings)), BATCH):
            events = []
            for ts, user, movie, rating in ratings[b:b + BATCH]:
                typ = event_type(rating, types)
                counts[typ] += 1
                events.append({"user": user_id(user), "item": item_id(movie),
                               "type": typ, "value": rating, "ts": ts})
            calls.append(("event.add", events))
        stored += sum(c.pipeline(calls, window=WINDOW))
        rate = stored / max(time.monotonic() - t0, 1e-6)
        progress("ratings: %d/%d stored (%.0f/s)" % (stored, len(ratings), rate))
    progress("")
    return stored, counts


# -- the walkthrough -------------------------------------------------------------

def pick_user(ratings, wanted):
    count, positive = Counter(), Counter()
    for _, user, _, rating in ratings:
        count[user] += 1
        positive[user] += rating >= 4.0
    if wanted is not None:
        if wanted not in count:
            sys.exit("movielens: user %d has no ratings in the data loaded" % wanted)
        return wanted
    small = [u for u in count if count[u] <= SMALL_USER] or list(count)
    return max(small, key=lambda u: (positive[u], -u))


def genre_share(ids, movies, genre):
    """The share of ids (item ids) whose movie carries genre."""
    if not ids:
        return 0.0
    hits = sum(genre in movie_of(i, movies)[1] for i in ids)
    return hits / len(ids)


def pick_genre(movies, ratings, user):
    """The genre to explore and the movies to click.

    Candidates: every genre (but IMAX and "(no genres listed)") with at
    least CLICKS movies the user has not rated and MIN_FANS others liked
    (rated 4 or more). The genre: the one with the smallest share of the
    user's liked movies; among equals, the one with most candidates, then
    the first in GENRES. The clicks: its CLICKS movies
    whose fans like the genre most (the mean, over a movie's fans, of the
    genre's share of what each fan liked): the core of the genre, whose
    co-occurrence neighbours are mostly more of it."""
    seen = {m for _, u, m, _ in ratings if u == user}
    liked = defaultdict(list)                     # user -> movies rated >= 4
    for _, u, m, r in ratings:
        if r >= 4.0 and m in movies:
            liked[u].append(m)
    fans = defaultdict(list)                      # movie -> users who liked it
    for u, ms in liked.items():
        for m in ms:
            fans[m].append(u)
    mine = liked.get(user, [])
    best = None
    for genre in GENRES:
        if genre in NOT_A_TASTE:
            continue
        pool = [m for m in fans if len(fans[m]) >= MIN_FANS and m not in seen
                and genre in movies[m][1]]
        if len(pool) < CLICKS:
            continue
        taste = sum(genre in movies[m][1] for m in mine) / max(len(mine), 1)
        key = (taste, -len(pool))
        if best is None or key < best[0]:
            best = (key, genre, pool)
    if best is None:
        sys.exit("movielens: no genre has %d unseen movies liked by %d users or more"
                 % (CLICKS, MIN_FANS))
    _, genre, pool = best
    share = {}                                    # fan -> the genre's share of their likes
    for m in pool:
        for u in fans[m]:
            if u not in share:
                share[u] = sum(genre in movies[x][1] for x in liked[u]) / len(liked[u])

    def loyalty(m):
        return sum(share[u] for u in fans[m]) / len(fans[m])
    pool.sort(key=lambda m: (-loyalty(m), -len(fans[m]), m))
    return genre, pool[:CLICKS]


def show(title, answer, movies, before=None):
    print(title)
    for i, hit in enumerate(answer["items"], 1):
        name, genres = movie_of(hit["id"], movies)
        mark = "+" if before is not None and hit["id"] not in before else " "
        print("  %2d. %s %-52.52s %s" % (i, mark, name, "|".join(genres)))


def main():
    ap = argparse.ArgumentParser(description="The MovieLens walkthrough against a running recd.")
    ap.add_argument("dir", help="a MovieLens folder (movies.csv, ratings.csv, tags.csv)")
    ap.add_argument("address", nargs="?",
                    default=os.environ.get("RECD_ADDR", "127.0.0.1:7700"),
                    help="host:port or a Unix socket path (default: $RECD_ADDR, else 127.0.0.1:7700)")
    ap.add_argument("--limit", type=int, help="load only the first N ratings of ratings.csv")
    ap.add_argument("--user", type=int, help="the MovieLens userId to follow")
    ap.add_argument("--types", choices=("graded", "click"), default="graded",
                    help="ratings as click/view/dislike by rating (graded, the default)"
                         " or every rating a click")
    ap.add_argument("--load-only", action="store_true",
                    help="load the folder and stop (no walkthrough)")
    args = ap.parse_args()

    try:
        movies, tokens, ntags, ratings = read_folder(args.dir, args.limit)
    except (OSError, KeyError, ValueError) as e:
        sys.exit("movielens: cannot read %s: %s" % (args.dir, e))
    if not ratings:
        sys.exit("movielens: no ratings in %s" % args.dir)
    with Client(args.address) as c:
        hello = c.call("sys.hello")
        print("connected to %s %s at %s" % (hello["server"], hello["version"], args.address))

        t0 = time.monotonic()
        written, with_vec = put_movies(c, movies, tokens)
        print("movies: %d items, %d with a content vector (%d tags), in %.1f s"
              % (written, with_vec, ntags, time.monotonic() - t0))
        t0 = time.monotonic()
        stored, types = add_ratings(c, ratings, args.types)
        took = time.monotonic() - t0
        print("ratings: %d events (%s) in %.1f s, %.0f events/s"
              % (stored, ", ".join("%d %ss" % (n, t) for t, n in sorted(types.items())),
                 took, stored / max(took, 1e-6)))
        if args.load_only:
            return

        user = pick_user(ratings, args.user)
        n_rated = sum(1 for _, u, _, _ in ratings if u == user)
        first = c.call("rec.recommend", {"user": user_id(user), "n": TOP})
        before = [h["id"] for h in first["items"]]
        print()
        show("top %d for %s (%d ratings), pipeline %s:" % (TOP, user_id(user), n_rated,
                                                         first["pipeline"]), first, movies)

        genre, picks = pick_genre(movies, ratings, user)
        print("\n%s has liked little %s; they click %d of its core movies:"
              % (user_id(user), genre, len(picks)))
        for m in picks:
            print("      %s" % movies[m][0])
        # The clicks carry the rec_id of the list the user was looking at,
        # so stats.get credits them to the pipeline that served it.
        clicks = [{"user": user_id(user), "item": item_id(m), "type": "click",
                   "rec_id": first["rec_id"]} for m in picks]
        c.call("event.add", *clicks)

        second = c.call("rec.recommend", {"user": user_id(user), "n": TOP})
        after = [h["id"] for h in second["items"]]
        print()
        show("top %d now (+: new in the list):" % TOP, second, movies, set(before))
        gone = [i for i in before if i not in after]
        print("\n%d of %d changed; left the list: %s"
              % (len(gone), TOP, "; ".join(movie_of(i, movies)[0] for i in gone) or "none"))
        print("genre: %s" % genre)
        print("genre share before: %.2f after: %.2f"
              % (genre_share(before, movies, genre), genre_share(after, movies, genre)))


if __name__ == "__main__":
    try:
        main()
    except RecdError as e:
        hint = ""
        if e.name == "dimension_mismatch":
            hint = ("\n(the server's data folder holds \"content\" vectors of another size:"
                    " serve a fresh one, e.g. ./recd serve --data /tmp/ml)")
        sys.exit("movielens: the server answered %s%s" % (e, hint))
    except OSError as e:
        sys.exit("movielens: %s (is recd running? make run, or ./recd serve)" % e)
