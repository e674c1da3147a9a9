#!/usr/bin/env node
// movielens.js - MovieLens in recd from Node.js: load it, ask, click, see
// the change. The same walkthrough as examples/python/movielens.py (same
// ids, vectors, event types and choices, so both print the same story),
// with the stock msgpack-RPC client `msgpack5rpc` and no other package.
//
//     ./recd serve --data /tmp/ml &
//     cd examples/node && npm ci && node movielens.js DIR [ADDRESS] [--limit N] [--user ID]
//                                                      [--types graded|click] [--load-only]
//
// DIR is a MovieLens folder in the ml-latest format (ml-latest-small, or
// anything with the same columns); ADDRESS is "host:port" or a Unix socket
// path (default: $RECD_ADDR, else 127.0.0.1:7700); --limit N loads only the
// first N ratings, --user ID follows that user, --types click makes every
// rating a click (default graded, below), --load-only stops after loading.
// The server should run the project's scripts and policies (the default of
// `recd serve`) on a fresh data folder, loaded once.
//
// The data: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens
// Datasets: History and Context. ACM Transactions on Interactive Intelligent
// Systems (TiiS) 5, 4: 19:1-19:19. https://doi.org/10.1145/2827872
// GroupLens publishes it for non-commercial use; read its README.txt.
//
// What goes in: the mapping of docs/movielens.md, the same as movielens.py
// and `recd serve --movielens DIR` load (movielens.py's header says more):
//   movies.csv  -> items "movie:<movieId>", props {title, genres, year}
//                  (year when the title ends in "(YYYY)"), and a 36-dim
//                  "content" vector: dims 0..19 one per genre of GENRES,
//                  dims 20..35 tag words ([A-Za-z0-9]+, lower case), each
//                  adding +-1 (the sign: the top bit of h) to dim 20 +
//                  h % 16, h = rec_hash_stable(word); the tag block unit
//                  length, then the whole vector.
//   ratings.csv -> events of "user:<userId>", value = rating, ts =
//                  timestamp, in (timestamp, userId, movieId) order; with
//                  --types graded (default) rating >= 4 "click", 2.5..3.5
//                  "view", <= 2 "dislike"; with --types click all clicks;
//                  1,000 a request, 8 requests in flight.
//   tags.csv    -> the tag dims (optional file).
// What comes out: a user's top 10, five clicks on core movies of the genre
// they liked least, the new top 10 and what changed, and the line
//     genre share before: 0.10 after: 0.60
// Exits 0 when every step worked, 1 on any failure.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const Session = require('msgpack5rpc');

const GENRES = ['Action', 'Adventure', 'Animation', 'Children', 'Comedy', 'Crime',
  'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'IMAX',
  'Musical', 'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War',
  'Western', '(no genres listed)'];
const GENRE_DIM = new Map(GENRES.map((g, i) => [g, i]));
const TAG_DIMS = 16;
const NOT_A_TASTE = new Set(['IMAX', '(no genres listed)']);

const BATCH = 1000; // events per event.add request
const WINDOW = 8; // requests in flight while loading
const TOP = 10; // length of the lists shown
const CLICKS = 5; // clicks sent in the new genre
const SMALL_USER = 100; // the default user has at most this many ratings
const MIN_FANS = 5; // a movie to click was liked by this many users
const TIMEOUT_MS = 120000; // the whole walkthrough

// ---- CSV (RFC 4180: quoted fields, "" inside quotes, CRLF or LF) ---------

function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let i = 0;
  const n = text.length;
  if (text.charCodeAt(0) === 0xfeff) i = 1; // a byte order mark
  while (i < n) {
    const ch = text[i];
    if (ch === '"' && field === '') { // a quoted field
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q < 0) throw new Error('unterminated quoted field');
        field += text.slice(i, q);
        if (text[q + 1] === '"') { // "" stands for one "
          field += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
    } else if (ch === ',') {
      row.push(field);
      field = '';
      i++;
    } else if (ch === '\n' || ch === '\r') {
      row.push(field);
      field = '';
      rows.push(row);
      row = [];
      i += ch === '\r' && text[i + 1] === '\n' ? 2 : 1;
    } else { // a plain field, up to the next comma or line end
      let end = i;
      while (end < n) {
        const c = text.charCodeAt(end);
        if (c === 44 || c === 10 || c === 13) break; // , \n \r
        end++;
      }
      field += text.slice(i, end);
      i = end;
    }
  }
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

// The rows of a CSV file with a header line naming columns, as objects.
function readCsv(file, ...columns) {
  const [header = [], ...rows] = parseCsv(fs.readFileSync(file, 'utf8'));
  const missing = columns.filter((c) => !header.includes(c));
  if (missing.length) throw new Error(`${file} has no column ${missing.join(', ')}`);
  return rows.filter((r) => r.length > 1 || r[0] !== '')
    .map((r) => Object.fromEntries(header.map((h, k) => [h, r[k] === undefined ? '' : r[k]])));
}

// ---- the content vector ----------------------------------------------------

// rec_hash_stable (core/engine/hash.h) of a string's bytes: 64-bit FNV-1a,
// then a multiply-xorshift finish.
const M64 = (1n << 64n) - 1n;
function hashStable(text) {
  let h = 1469598103934665603n;
  for (const b of Buffer.from(text, 'utf8')) h = ((h ^ BigInt(b)) * 1099511628211n) & M64;
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & M64;
  return h ^ (h >> 33n);
}

function tagTokens(tag) {
  return (tag.match(/[A-Za-z0-9]+/g) || []).map((t) => t.toLowerCase());
}

function unit(block) {
  const norm = Math.sqrt(block.reduce((s, x) => s + x * x, 0));
  return norm > 0 ? block.map((x) => x / norm) : block;
}

function contentVector(genres, tokens) {
  const g = new Array(GENRES.length).fill(0);
  for (const name of genres) if (GENRE_DIM.has(name)) g[GENRE_DIM.get(name)] = 1;
  const t = new Array(TAG_DIMS).fill(0);
  for (const tok of tokens) {
    const h = hashStable(tok);
    t[Number(h % BigInt(TAG_DIMS))] += h >> 63n ? -1 : 1;
  }
  const v = g.concat(unit(t));
  return v.some((x) => x !== 0) ? unit(v) : null;
}

// A vector as a msgpack bin of little-endian float32.
function f32(values) {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b;
}

// {title, genres, year}: year when the title ends in "(YYYY)".
function movieProps(title, genres) {
  const props = {title, genres};
  const m = title.match(/\(([0-9]{4})\)[ \t]*$/);
  if (m) props.year = Number(m[1]);
  return props;
}

function eventType(rating, types) {
  if (types === 'click' || rating >= 4) return 'click';
  if (rating >= 2.5) return 'view';
  return 'dislike';
}

// ---- reading the folder ----------------------------------------------------

function readFolder(dir, limit) {
  const movies = new Map(); // movieId -> {title, genres}
  for (const r of readCsv(path.join(dir, 'movies.csv'), 'movieId', 'title', 'genres')) {
    movies.set(Number(r.movieId), {title: r.title, genres: r.genres.split('|').filter((g) => g)});
  }
  const tokens = new Map(); // movieId -> tag tokens
  let ntags = 0;
  const tagsPath = path.join(dir, 'tags.csv');
  if (fs.existsSync(tagsPath)) {
    for (const r of readCsv(tagsPath, 'movieId', 'tag')) {
      const m = Number(r.movieId);
      if (!tokens.has(m)) tokens.set(m, []);
      tokens.get(m).push(...tagTokens(r.tag));
      ntags++;
    }
  }
  let rows = readCsv(path.join(dir, 'ratings.csv'), 'userId', 'movieId', 'rating', 'timestamp');
  if (limit !== null) rows = rows.slice(0, limit);
  const ratings = rows.map((r) => ({ts: Math.trunc(Number(r.timestamp)), user: Number(r.userId),
    movie: Number(r.movieId), rating: Number(r.rating)}));
  ratings.sort((a, b) => a.ts - b.ts || a.user - b.user || a.movie - b.movie || a.rating - b.rating);
  return {movies, tokens, ntags, ratings};
}

// ---- the connection --------------------------------------------------------

// An error answer from recd: {code, name, message}; `recdName` is stable.
class RecdError extends Error {
  constructor(err) {
    const e = err && typeof err === 'object' ? err : {message: String(err)};
    super(`${e.name || 'error'}: ${e.message || ''}`);
    this.name = 'RecdError';
    this.recdName = e.name;
  }
}

// Connect to "host:port" or a Unix socket path; resolves to {call, close}.
function connect(address) {
  let opts;
  if (address.includes('/')) {
    opts = {path: address.replace(/^unix:/, '')};
  } else {
    const i = address.lastIndexOf(':');
    if (i < 0) throw new Error(`bad address '${address}': expected host:port or a socket path`);
    opts = {host: address.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1', port: Number(address.slice(i + 1))};
  }
  return new Promise((resolve, reject) => {
    const socket = net.connect(opts);
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      socket.setNoDelay(true);
      const session = new Session();
      session.attach(socket, socket);
      const pending = new Set();
      const fail = (e) => { for (const p of pending) p(e); pending.clear(); };
      socket.on('error', fail);
      socket.on('close', () => fail(new Error('connection closed by the server')));
      session.on('notification', (method, args) => {
        if (method === 'error') fail(new RecdError(args && args[0]));
      });
      resolve({
        // Requests may be pipelined: call() again before the answer comes.
        call(method, ...params) {
          return new Promise((res, rej) => {
            pending.add(rej);
            session.request(method, params, (err, result) => {
              pending.delete(rej);
              if (err) rej(new RecdError(err));
              else res(result);
            });
          });
        },
        close() { socket.end(); },
      });
    });
  });
}

// Run [[method, params], ...] with at most `window` unanswered; the
// results in order (recd answers each connection's requests in order).
async function pipeline(c, calls, window) {
  const results = new Array(calls.length);
  let next = 0;
  async function lane() {
    while (next < calls.length) {
      const k = next++;
      results[k] = await c.call(calls[k][0], ...calls[k][1]);
    }
  }
  await Promise.all(Array.from({length: Math.min(window, calls.length)}, lane));
  return results;
}

// ---- loading ---------------------------------------------------------------

const itemId = (movie) => `movie:${movie}`;
const userId = (user) => `user:${user}`;

// (title, genres) of an item id; {title: id, genres: []} for other items.
function movieOf(id, movies) {
  if (typeof id === 'string' && /^movie:\d+$/.test(id)) {
    return movies.get(Number(id.slice(6))) || {title: '?', genres: []};
  }
  return {title: String(id), genres: []};
}

function progress(text) {
  if (process.stderr.isTTY) process.stderr.write(`\r${' '.repeat(70)}\r${text}`);
}

async function putMovies(c, movies, tokens) {
  const calls = [];
  let batch = [];
  let withVec = 0;
  for (const [movie, {title, genres}] of movies) {
    const item = {id: itemId(movie), props: movieProps(title, genres)};
    const v = contentVector(genres, tokens.get(movie) || []);
    if (v) {
      item.vectors = {content: f32(v)};
      withVec++;
    }
    batch.push(item);
    if (batch.length === 500) {
      calls.push(['item.put', batch]);
      batch = [];
    }
  }
  if (batch.length) calls.push(['item.put', batch]);
  const written = (await pipeline(c, calls, WINDOW)).reduce((a, b) => a + b, 0);
  return {written, withVec};
}

async function addRatings(c, ratings, mapping) {
  const types = new Map();
  const t0 = Date.now();
  let stored = 0;
  const chunk = BATCH * WINDOW * 4; // events between progress lines
  for (let start = 0; start < ratings.length; start += chunk) {
    const calls = [];
    for (let b = start; b < Math.min(start + chunk, ratings.length); b += BATCH) {
      const events = ratings.slice(b, Math.min(b + BATCH, start + chunk)).map((r) => {
        const type = eventType(r.rating, mapping);
        types.set(type, (types.get(type) || 0) + 1);
        return {user: userId(r.user), item: itemId(r.movie), type, value: r.rating, ts: r.ts};
      });
      calls.push(['event.add', events]);
    }
    stored += (await pipeline(c, calls, WINDOW)).reduce((a, b) => a + b, 0);
    progress(`ratings: ${stored}/${ratings.length} stored (${Math.round(stored / Math.max((Date.now() - t0) / 1000, 1e-6))}/s)`);
  }
  progress('');
  return {stored, types};
}

// ---- the walkthrough -------------------------------------------------------

function pickUser(ratings, wanted) {
  const count = new Map();
  const positive = new Map();
  for (const r of ratings) {
    count.set(r.user, (count.get(r.user) || 0) + 1);
    positive.set(r.user, (positive.get(r.user) || 0) + (r.rating >= 4 ? 1 : 0));
  }
  if (wanted !== null) {
    if (!count.has(wanted)) throw new Error(`user ${wanted} has no ratings in the data loaded`);
    return wanted;
  }
  let small = [...count.keys()].filter((u) => count.get(u) <= SMALL_USER);
  if (!small.length) small = [...count.keys()];
  let best = small[0];
  for (const u of small) {
    const p = positive.get(u);
    const q = positive.get(best);
    if (p > q || (p === q && u < best)) best = u;
  }
  return best;
}

function genreShare(ids, movies, genre) {
  if (!ids.length) return 0;
  return ids.filter((id) => movieOf(id, movies).genres.includes(genre)).length / ids.length;
}

// The genre with the smallest share of the user's likes among those with
// CLICKS unseen movies that MIN_FANS users liked (among equals: most such
// movies, then first in GENRES); and its CLICKS movies whose fans like the
// genre most. See pick_genre in movielens.py.
function pickGenre(movies, ratings, user) {
  const seen = new Set(ratings.filter((r) => r.user === user).map((r) => r.movie));
  const liked = new Map(); // user -> movies rated >= 4
  for (const r of ratings) {
    if (r.rating >= 4 && movies.has(r.movie)) {
      if (!liked.has(r.user)) liked.set(r.user, []);
      liked.get(r.user).push(r.movie);
    }
  }
  const fans = new Map(); // movie -> users who liked it
  for (const [u, ms] of liked) {
    for (const m of ms) {
      if (!fans.has(m)) fans.set(m, []);
      fans.get(m).push(u);
    }
  }
  const mine = liked.get(user) || [];
  let best = null;
  for (const genre of GENRES) {
    if (NOT_A_TASTE.has(genre)) continue;
    const pool = [...fans.keys()].filter((m) => fans.get(m).length >= MIN_FANS && !seen.has(m) &&
      movies.get(m).genres.includes(genre));
    if (pool.length < CLICKS) continue;
    const taste = mine.filter((m) => movies.get(m).genres.includes(genre)).length / Math.max(mine.length, 1);
    if (!best || taste < best.taste || (taste === best.taste && pool.length > best.pool.length)) {
      best = {taste, genre, pool};
    }
  }
  if (!best) throw new Error(`no genre has ${CLICKS} unseen movies liked by ${MIN_FANS} users or more`);
  const {genre, pool} = best;
  const share = new Map(); // fan -> the genre's share of their likes
  for (const m of pool) {
    for (const u of fans.get(m)) {
      if (!share.has(u)) {
        const ms = liked.get(u);
        share.set(u, ms.filter((x) => movies.get(x).genres.includes(genre)).length / ms.length);
      }
    }
  }
  const loyalty = new Map(pool.map((m) => {
    let s = 0;
    for (const u of fans.get(m)) s += share.get(u);
    return [m, s / fans.get(m).length];
  }));
  pool.sort((a, b) => loyalty.get(b) - loyalty.get(a) || fans.get(b).length - fans.get(a).length || a - b);
  return {genre, picks: pool.slice(0, CLICKS)};
}

function show(title, answer, movies, before) {
  console.log(title);
  answer.items.forEach((hit, k) => {
    const {title: name, genres} = movieOf(hit.id, movies);
    const mark = before && !before.has(hit.id) ? '+' : ' ';
    console.log(`  ${String(k + 1).padStart(2)}. ${mark} ${name.slice(0, 52).padEnd(52)} ${genres.join('|')}`);
  });
}

function parseArgs(argv) {
  const args = {dir: null, address: null, limit: null, user: null, types: 'graded'};
  const rest = [];
  for (let k = 0; k < argv.length; k++) {
    const a = argv[k];
    const opt = a.match(/^--(limit|user)(?:=(.*))?$/);
    const typ = a.match(/^--types(?:=(.*))?$/);
    if (a === '--load-only') {
      args.loadOnly = true;
    } else if (typ) {
      const v = typ[1] !== undefined ? typ[1] : argv[++k];
      if (v !== 'graded' && v !== 'click') throw new Error('--types is graded or click');
      args.types = v;
    } else if (opt) {
      const v = opt[2] !== undefined ? opt[2] : argv[++k];
      if (v === undefined || !/^\d+$/.test(v)) throw new Error(`--${opt[1]} wants a number`);
      args[opt[1]] = Number(v);
    } else if (a === '-h' || a === '--help') {
      console.log('usage: node movielens.js DIR [ADDRESS] [--limit N] [--user ID] [--types graded|click] [--load-only]');
      process.exit(0);
    } else {
      rest.push(a);
    }
  }
  if (rest.length < 1 || rest.length > 2) {
    throw new Error('usage: node movielens.js DIR [ADDRESS] [--limit N] [--user ID] [--types graded|click] [--load-only]');
  }
  args.dir = rest[0];
  args.address = rest[1] || process.env.RECD_ADDR || '127.0.0.1:7700';
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const {movies, tokens, ntags, ratings} = readFolder(args.dir, args.limit);
  if (!ratings.length) throw new Error(`no ratings in ${args.dir}`);
  const c = await connect(args.address);
  try {
    const hello = await c.call('sys.hello');
    console.log(`connected to ${hello.server} ${hello.version} at ${args.address}`);

    let t0 = Date.now();
    const {written, withVec} = await putMovies(c, movies, tokens);
    console.log(`movies: ${written} items, ${withVec} with a content vector (${ntags} tags), in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    t0 = Date.now();
    const {stored, types} = await addRatings(c, ratings, args.types);
    const took = Math.max((Date.now() - t0) / 1000, 1e-6);
    const kinds = [...types.keys()].sort().map((t) => `${types.get(t)} ${t}s`).join(', ');
    console.log(`ratings: ${stored} events (${kinds}) in ${took.toFixed(1)} s, ${Math.round(stored / took)} events/s`);
    if (args.loadOnly) return;

    const user = pickUser(ratings, args.user);
    const nRated = ratings.filter((r) => r.user === user).length;
    const first = await c.call('rec.recommend', {user: userId(user), n: TOP});
    const before = first.items.map((h) => h.id);
    console.log('');
    show(`top ${TOP} for ${userId(user)} (${nRated} ratings), pipeline ${first.pipeline}:`, first, movies, null);

    const {genre, picks} = pickGenre(movies, ratings, user);
    console.log(`\n${userId(user)} has liked little ${genre}; they click ${picks.length} of its core movies:`);
    for (const m of picks) console.log(`      ${movies.get(m).title}`);
    // The clicks carry the rec_id of the list the user was looking at, so
    // stats.get credits them to the pipeline that served it.
    await c.call('event.add', ...picks.map((m) => ({user: userId(user), item: itemId(m), type: 'click', rec_id: first.rec_id})));

    const second = await c.call('rec.recommend', {user: userId(user), n: TOP});
    const after = second.items.map((h) => h.id);
    console.log('');
    show(`top ${TOP} now (+: new in the list):`, second, movies, new Set(before));
    const gone = before.filter((id) => !after.includes(id));
    console.log(`\n${gone.length} of ${TOP} changed; left the list: ${gone.map((id) => movieOf(id, movies).title).join('; ') || 'none'}`);
    console.log(`genre: ${genre}`);
    console.log(`genre share before: ${genreShare(before, movies, genre).toFixed(2)} after: ${genreShare(after, movies, genre).toFixed(2)}`);
  } finally {
    c.close();
  }
}

const watchdog = setTimeout(() => {
  console.error(`movielens: no answer within ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

main().then(() => {
  clearTimeout(watchdog);
}, (e) => {
  clearTimeout(watchdog);
  console.error('movielens:', e && e.message ? e.message : e);
  if (e && e.recdName === 'dimension_mismatch') {
    console.error('(the server\'s data folder holds "content" vectors of another size: serve a fresh one, e.g. ./recd serve --data /tmp/ml)');
  }
  if (e && e.code === 'ECONNREFUSED') console.error('is recd running? (make run, or ./recd serve)');
  process.exit(1);
});
