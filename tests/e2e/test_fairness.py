"""Deletes are not starved by a steady stream of writes.

A delete (item.delete, user.delete) commits on its own, after every write
accepted before it: while one waits, new writes wait behind it, so it runs
as soon as what was pending is committed however busy the stream.
"""
import socket
import threading

import msgpack


WRITERS = 4
BLOCK = 256          # requests per send
DELETES = 20


def writer(port, stop, counts, k, errors):
    """event.add pipelined without waiting (the server's backpressure is
    the window) until stop; then every answer is read."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        block = b"".join(msgpack.packb([0, j, "event.add", [
            {"user": "fw-%d" % k, "item": "fi-%d" % (j % 50), "type": "view"}]])
            for j in range(BLOCK))
        sent = [0]

        def send():
            while not stop.is_set():
                s.sendall(block)
                sent[0] += BLOCK

        t = threading.Thread(target=send)
        t.start()
        u = msgpack.Unpacker(raw=False)
        while t.is_alive() or counts[k] < sent[0]:
            data = s.recv(1 << 16)
            if not data:
                raise ConnectionError("closed")
            u.feed(data)
            for m in u:
                if m[2] is not None:
                    raise RuntimeError(m[2])
                counts[k] += 1
        t.join()
        s.close()
    except Exception as e:          # reported by the test
        errors.append(e)


def test_deletes_complete_under_a_write_stream(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", *[{"id": "fi-%d" % i} for i in range(50)])
        c.call("item.put", *[{"id": "del-%d" % i} for i in range(DELETES)])
    stop = threading.Event()
    counts = [0] * WRITERS
    errors = []
    threads = [threading.Thread(target=writer, args=(srv.port, stop, counts, k, errors))
               for k in range(WRITERS)]
    for t in threads:
        t.start()
    try:
        # The stream is flowing before the first delete.
        with srv.connect() as w:
            while sum(counts) < 500 and not errors:
                w.call("sys.ping")
        assert not errors, errors
        before = sum(counts)
        # Each delete answers on its first attempt (the client's timeout
        # of 60 s is the only clock: a starved delete never answers).
        with srv.connect(timeout=60) as d:
            for i in range(DELETES):
                assert d.call("item.delete", "del-%d" % i) == 1
        during = sum(counts) - before
        assert not errors, errors
        assert all(t.is_alive() for t in threads), "the write stream stopped early"
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert not errors, errors
    # The writes went on while the deletes ran, and none was lost.
    assert during > 0
    with srv.connect() as c:
        for i in range(DELETES):
            assert c.call("item.get", "del-%d" % i) is None
        assert c.call("sys.ping") == "pong"
