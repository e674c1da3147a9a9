"""Read the state of a stopped recd's data folder with LMDB's own mdb_dump
(lmdb-utils), independently of recd's code: the event log, learned vectors,
counters, policy kv and the checkpoint record, keyed by external ids so two
folders that learned the same events compare equal. Layouts: core/engine/engine.c.
"""
import struct
import subprocess

import msgpack


def mdb_dump(folder, db):
    """[(key bytes, value bytes)] of one named database, in key order."""
    out = subprocess.run(["mdb_dump", "-s", db, folder], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    rows, i = [], out.index("HEADER=END") + 1
    while out[i] != "DATA=END":
        rows.append((bytes.fromhex(out[i].strip()), bytes.fromhex(out[i + 1].strip())))
        i += 2
    return rows


def _ids(folder, db):
    return {struct.unpack(">I", k)[0]: decode_id(v) for k, v in mdb_dump(folder, db)}


def _meta(folder):
    spaces, counters, types, checkpoint = {}, {}, {}, None
    for k, v in mdb_dump(folder, "meta"):
        if k.startswith(b"space/"):
            spaces[struct.unpack(">H", v[:2])[0]] = k[6:].decode()
        elif k.startswith(b"counter/"):
            counters[struct.unpack(">H", v[:2])[0]] = k[8:].decode()
        elif k.startswith(b"type/"):
            types[struct.unpack(">H", v[:2])[0]] = k[5:].decode()
        elif k == b"checkpoint":
            checkpoint = (struct.unpack(">Q", v[:8])[0], v[8:])
    return spaces, counters, types, checkpoint


def decode_event(v, types):
    """One log row: ts f64, user u32, item u32, type u16, flags u8,
    [weight f32], [value f64], [rec_id len u8 + bytes], [context]."""
    ts, user, item, typ, flags = struct.unpack("<dIIHB", v[:19])
    off, ev = 19, {"ts": ts, "user": user, "item": item, "type": types.get(typ, typ)}
    if flags & 8:
        ev["weight"] = struct.unpack("<f", v[off:off + 4])[0]
        off += 4
    if flags & 1:
        ev["value"] = struct.unpack("<d", v[off:off + 8])[0]
        off += 8
    if flags & 2:
        n = v[off]
        ev["rec_id"] = v[off + 1:off + 1 + n].decode()
        off += 1 + n
    if flags & 4:
        ev["context"] = msgpack.unpackb(v[off:], raw=False, strict_map_key=False)
    return ev


def decode_id(key):
    """An encoded id (core/engine/idmap.h) as a client sends it: 's' + UTF-8 bytes,
    or 'i' + 8 bytes big-endian with the sign bit flipped."""
    if key[:1] == b"s":
        return key[1:].decode()
    u = struct.unpack(">Q", key[1:9])[0] ^ (1 << 63)
    return u - (1 << 64) if u >= 1 << 63 else u


def read(folder):
    """The folder's state: events (log order, with external ids), learned
    vectors {(space, 'item'|'user', id): floats}, counters {(family, id):
    (value, t)}, kv {key: value}, checkpoint (seq, generator bytes), item
    properties {id: props}."""
    items, users = _ids(folder, "item_keys"), _ids(folder, "user_keys")
    spaces, counters, types, checkpoint = _meta(folder)
    events = []
    for k, v in mdb_dump(folder, "events"):
        ev = decode_event(v, types)
        ev["seq"] = struct.unpack(">Q", k)[0]
        ev["user"] = users.get(ev["user"], ("gone", ev["user"]))
        ev["item"] = items.get(ev["item"], ("gone", ev["item"]))
        events.append(ev)
    vectors = {}
    for k, v in mdb_dump(folder, "vectors"):
        sid, kind, idx = struct.unpack(">HBI", k)
        ids = users if kind == 1 else items
        vectors[(spaces[sid], "user" if kind == 1 else "item", ids.get(idx, idx))] = \
            struct.unpack("<%df" % (len(v) // 4), v)
    cnt = {}
    for k, v in mdb_dump(folder, "counters"):
        fid, idx = struct.unpack(">HI", k)
        cnt[(counters[fid], items.get(idx, idx))] = struct.unpack("<dd", v)
    kv = {k: msgpack.unpackb(v, raw=False, strict_map_key=False)
          for k, v in mdb_dump(folder, "kv")}
    props = {items.get(struct.unpack(">I", k)[0]): msgpack.unpackb(v[1:], raw=False,
                                                                   strict_map_key=False)
             for k, v in mdb_dump(folder, "items")}
    return {"events": events, "vectors": vectors, "counters": cnt, "kv": kv,
            "checkpoint": checkpoint, "items": items, "users": users, "props": props}
