#!/usr/bin/env node
// quickstart.js - a first conversation with a running recd server from
// Node.js, with the stock msgpack-RPC client `msgpack5rpc` (recd speaks
// plain msgpack-RPC, see docs/protocol.md, so no recd-specific client is
// needed).
//
//     ./recd serve --data ./data --listen 127.0.0.1:7700 &
//     cd examples/node && npm ci && node quickstart.js [ADDRESS]
//
// ADDRESS is "host:port" or a Unix socket path (default: $RECD_ADDR, else
// 127.0.0.1:7700). Puts a tiny catalogue with content vectors and props,
// sends a few events, asks for recommendations and similar items, clicks,
// asks again, and reads the live metrics. Exits 0 when every step worked,
// 1 on any failure (an error answer, a refused connection, a timeout).
'use strict';

const net = require('net');
const Session = require('msgpack5rpc');

const TIMEOUT_MS = 10000; // the whole walkthrough; it takes well under 1 s

// id, title, genre, content vector: the 8 axes of the demo catalogue that
// `make run` loads (comedy, drama, action, horror, romance, scifi, docs,
// kids), so these items sit beside it in the same "content" space
const CATALOGUE = [
  ['js-m1', 'Laugh Track', 'comedy', [0.9, 0.1, 0, 0, 0, 0.0, 0, 0]],
  ['js-m2', 'Pratfall', 'comedy', [0.8, 0.2, 0, 0, 0, 0.1, 0, 0]],
  ['js-m3', 'Slapstick II', 'comedy', [0.85, 0.0, 0, 0, 0, 0.15, 0, 0]],
  ['js-m4', 'Quiet Rooms', 'drama', [0.1, 0.9, 0, 0, 0, 0.0, 0, 0]],
  ['js-m5', 'Long Winter', 'drama', [0.0, 0.95, 0, 0, 0, 0.1, 0, 0]],
  ['js-m6', 'Orbit', 'scifi', [0.0, 0.1, 0, 0, 0, 0.9, 0, 0]],
  ['js-m7', 'Red Planet', 'scifi', [0.1, 0.0, 0, 0, 0, 0.95, 0, 0]],
  ['js-m8', 'Time Loop', 'scifi', [0.2, 0.1, 0, 0, 0, 0.8, 0, 0]],
];

// An error answer from recd: {code, name, message}. `name` is stable
// (not_found, invalid_params, ...; docs/protocol.md#errors), so branch on it.
class RecdError extends Error {
  constructor(err) {
    const e = err && typeof err === 'object' ? err : {message: String(err)};
    super(`${e.name || 'error'}: ${e.message || ''}`);
    this.name = 'RecdError';
    this.code = e.code;
    this.recdName = e.name;
  }
}

// Connect to "host:port" or a Unix socket path; resolves to {call, notify, close}.
function connect(address) {
  const opts = address.includes('/')
    ? {path: address.replace(/^unix:/, '')}
    : (() => {
        const i = address.lastIndexOf(':');
        if (i < 0) throw new Error(`bad address '${address}': expected host:port or a socket path`);
        return {host: address.slice(0, i) || '127.0.0.1', port: Number(address.slice(i + 1))};
      })();
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
      socket.on('error', (e) => fail(e));
      socket.on('close', () => fail(new Error('connection closed by the server')));
      // The server reports fatal protocol errors as a notification, then closes.
      session.on('notification', (method, args) => {
        if (method === 'error') fail(new RecdError(args && args[0]));
      });
      resolve({
        // params are the msgpack-RPC params array: call('item.put', item1, item2)
        call(method, ...params) {
          return new Promise((res, rej) => {
            const abort = (e) => rej(e);
            pending.add(abort);
            session.request(method, params, (err, result) => {
              pending.delete(abort);
              if (err) rej(new RecdError(err));
              else res(result);
            });
          });
        },
        notify(method, ...params) { session.notify(method, params); },
        close() { socket.end(); },
      });
    });
  });
}

// A vector as a msgpack bin of little-endian float32: smaller than an array.
function f32(values) {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b;
}

async function show(c, title, answer) {
  console.log(`${title}  (pipeline ${answer.pipeline}, rec_id ${answer.rec_id})`);
  let i = 0;
  for (const hit of answer.items) {
    const item = await c.call('item.get', hit.id);
    const name = item && item.props && item.props.title;
    console.log(`  ${String(++i).padStart(2)}. ${String(hit.id).padEnd(14)} ${String(name || '?').padEnd(14)} ${hit.score.toFixed(3).padStart(8)}`);
  }
}

function fmtRate(r) {
  return r && typeof r.ctr === 'number' ? `${r.impressions} shown, ${r.clicks} clicks, ctr ${r.ctr.toFixed(3)}` : '-';
}

async function main() {
  const address = process.argv[2] || process.env.RECD_ADDR || '127.0.0.1:7700';
  const c = await connect(address);
  try {
    const hello = await c.call('sys.hello');
    console.log(`connected to ${hello.server} ${hello.version} (api ${hello.api}) at ${address}`);

    // Items: vectors as arrays of numbers, or compactly as bin float32 LE.
    const items = CATALOGUE.map(([id, title, genre, v], n) => ({
      id, props: {title, genre}, vectors: {content: n % 2 ? f32(v) : v},
    }));
    console.log('items written:', await c.call('item.put', ...items));

    // Some history from other users: comedy fans click, scifi fans watch.
    const events = [];
    for (let u = 0; u < 4; u++) {
      for (const m of ['js-m1', 'js-m2', 'js-m3']) events.push({user: `js-fan-c${u}`, item: m, type: 'click'});
      for (const m of ['js-m6', 'js-m7', 'js-m8']) events.push({user: `js-fan-s${u}`, item: m, type: 'view'});
    }
    events.push({user: 'js-fan-s0', item: 'js-m7', type: 'purchase', value: 9.9});
    console.log('events stored:', await c.call('event.add', ...events));

    const similar = await c.call('rec.similar', {item: 'js-m6', n: 3});
    await show(c, '\nitems like Orbit:', similar);
    if (similar.items.length === 0) throw new Error('rec.similar returned nothing for js-m6');

    // A fresh user each run, so running the walkthrough twice shows the same story.
    const alice = `js-alice-${Date.now().toString(36)}`;
    const before = await c.call('rec.recommend', {user: alice, n: 4});
    await show(c, `\nrecommended for ${alice} (new user):`, before);

    // Alice clicks two comedies; the events carry the rec_id they came from,
    // so stats.get credits the clicks to the pipeline that showed them.
    const clicks = ['js-m1', 'js-m2'].map((m) => ({user: alice, item: m, type: 'click', rec_id: before.rec_id}));
    console.log(`\n${alice} clicks js-m1 and js-m2:`, await c.call('event.add', ...clicks), 'stored');
    const after = await c.call('rec.recommend', {user: alice, n: 4});
    await show(c, `recommended for ${alice} now:`, after);
    const ids = (a) => a.items.map((h) => h.id).join(',');
    if (ids(before) === ids(after)) throw new Error('the clicks did not change the recommendations');
    if (after.items.some((h) => h.id === 'js-m1' || h.id === 'js-m2')) {
      throw new Error('clicked items came back in the recommendations');
    }

    const user = await c.call('user.get', alice);
    console.log(`\n${alice}'s history:`, user.history.map((h) => `${h.type} ${h.item}`).join(', '));

    // Live metrics: impressions and clicks per pipeline, variant and strategy.
    const stats = await c.call('stats.get');
    console.log('\nstats.get:');
    for (const group of ['pipelines', 'variants', 'strategies']) {
      for (const [name, s] of Object.entries(stats[group] || {})) {
        console.log(`  ${group.padEnd(10)} ${name.padEnd(10)} total: ${fmtRate(s.total)}`);
      }
    }

    // Errors come back by name.
    try {
      await c.call('rec.similar', {item: 'no-such-item'});
      throw new Error('rec.similar on an unknown item should fail');
    } catch (e) {
      if (!(e instanceof RecdError) || e.recdName !== 'not_found') throw e;
      console.log('\nerrors come back by name:', e.message);
    }
    try {
      await c.call('rec.recommend', {user: alice, n: 0});
      throw new Error('n = 0 should be refused');
    } catch (e) {
      if (!(e instanceof RecdError)) throw e;
      if (e.recdName === 'out_of_range' || e.recdName === 'invalid_params') {
        console.log('and bad parameters too:', e.message);
      } else {
        throw e;
      }
    }
  } finally {
    c.close();
  }
}

const watchdog = setTimeout(() => {
  console.error(`quickstart: no answer within ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS);

main().then(() => {
  clearTimeout(watchdog);
  console.log('\ndone');
  process.exitCode = 0;
}, (e) => {
  clearTimeout(watchdog);
  console.error('quickstart failed:', e && e.message ? e.message : e);
  if (e && e.code === 'ECONNREFUSED') console.error('is recd running? (make run, or ./recd serve)');
  process.exit(1);
});
