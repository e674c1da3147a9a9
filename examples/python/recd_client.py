"""recd_client - a small msgpack-RPC client for recd (needs only python3-msgpack).

    from recd_client import Client, RecdError
    with Client("127.0.0.1:7700") as c:          # or Client("/path/recd.sock")
        c.call("item.put", {"id": "m1", "vectors": {"content": [0.1, 0.2]}})
        print(c.call("rec.similar", {"item": "m1", "n": 5}))

Requests may be pipelined: `send` returns the msgid, `recv` returns the next
reply as (msgid, error, result); `pipeline` does both for a list of calls.
"""
import socket
import struct

import msgpack

__all__ = ["Client", "RecdError", "f32"]

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2


class RecdError(Exception):
    """An error answered by recd: `name` (stable), `code` (int), `message`."""

    def __init__(self, name, message="", code=None):
        super().__init__(name, message, code)
        self.name, self.message, self.code = name, message, code

    @classmethod
    def from_wire(cls, err):
        """Build from the wire form {code, name, message} (or anything else)."""
        if isinstance(err, dict):
            return cls(str(err.get("name", "error")), str(err.get("message", "")),
                       err.get("code"))
        return cls("error", repr(err))

    def __str__(self):
        return "%s: %s" % (self.name, self.message)


def f32(vector):
    """A vector as the compact wire form: bin of little-endian float32."""
    return struct.pack("<%df" % len(vector), *vector)


class Client:
    """One connection to recd. `address` is "host:port", "[v6]:port", or a Unix
    socket path (anything containing "/", or "unix:PATH")."""

    def __init__(self, address="127.0.0.1:7700", timeout=30.0):
        self.address = address
        self.notifications = []          # server-sent notifications seen by recv
        self._msgid = 0
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False,
                                          max_buffer_size=64 << 20)
        if address.startswith("unix:") or "/" in address:
            path = address[5:] if address.startswith("unix:") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = path
        else:
            host, _, port = address.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = (host, int(port))
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(target)
        except OSError as e:
            self.sock.close()
            # the same exception type (callers' handlers keep working), with
            # the address and a hint instead of a bare errno
            err = type(e)(e.errno, "cannot connect to %s: %s (is recd running? make run, "
                          "or ./recd serve)" % (address, e.strerror or e))
            raise err from None

    # -- plumbing ---------------------------------------------------------
    def _pack(self, msg):
        return msgpack.packb(msg, use_bin_type=True)

    def send_raw(self, data):
        """Send bytes as they are (tests use this for malformed input)."""
        self.sock.sendall(data)

    def read_message(self):
        """The next msgpack value from the stream; ConnectionError at EOF."""
        while True:
            try:
                return next(self._unpacker)
            except StopIteration:
                pass
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("recd closed the connection")
            self._unpacker.feed(data)

    # -- API ----------------------------------------------------------------
    def send(self, method, *params):
        """Send a request without waiting; returns its msgid."""
        self._msgid = (self._msgid + 1) & 0xFFFFFFFF
        self.sock.sendall(self._pack([REQUEST, self._msgid, method, list(params)]))
        return self._msgid

    def notify(self, method, *params):
        """Send a notification: never answered, failures only counted."""
        self.sock.sendall(self._pack([NOTIFICATION, method, list(params)]))

    def recv(self):
        """The next reply as (msgid, error, result); error is a RecdError or None.
        A server notification [2, "error", [err]] (sent before recd closes a
        connection it cannot parse) is kept in `notifications` and raised."""
        while True:
            msg = self.read_message()
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == RESPONSE:
                err = None if msg[2] is None else RecdError.from_wire(msg[2])
                return msg[1], err, msg[3]
            self.notifications.append(msg)
            if isinstance(msg, list) and len(msg) == 3 and msg[1] == "error":
                raise RecdError.from_wire(msg[2][0] if msg[2] else None)

    def call(self, method, *params):
        """Send one request and return its result, or raise RecdError."""
        msgid = self.send(method, *params)
        rid, err, result = self.recv()
        if rid != msgid:
            raise RecdError("protocol_error", "reply %r to request %r" % (rid, msgid))
        if err is not None:
            raise err
        return result

    def pipeline(self, calls, window=256, raise_errors=True):
        """Run [(method, params), ...] pipelined (at most `window` unanswered)
        and return the results in order, matched by msgid. With raise_errors
        the first failed call's RecdError is raised after every reply is in;
        otherwise its slot holds the RecdError."""
        calls, pending, results = list(calls), {}, {}
        sent = 0
        while sent < len(calls) or pending:
            while sent < len(calls) and len(pending) < window:
                method, params = calls[sent]
                pending[self.send(method, *params)] = sent
                sent += 1
            msgid, err, result = self.recv()
            if msgid not in pending:
                raise RecdError("protocol_error", "unexpected msgid %r" % (msgid,))
            results[pending.pop(msgid)] = err if err is not None else result
        out = [results[i] for i in range(len(calls))]
        if raise_errors:
            for r in out:
                if isinstance(r, RecdError):
                    raise r
        return out

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(address="127.0.0.1:7700", timeout=30.0):
    """Shorthand for Client(address, timeout)."""
    return Client(address, timeout)
