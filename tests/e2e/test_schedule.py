"""model.schedule: the server's own training schedule can be paused (a
replay that trains where it chooses does so) and resumed; model.train
still trains while it is paused."""
import time

import pytest

from conftest import ROOT
from recd_client import RecdError

SCRIPTS = ["--scripts", str(ROOT / "scripts"), "--policies", str(ROOT / "policies"),
           "--log-level", "info"]


def events(n, start=0):
    return [{"user": "u%d" % (k % 9), "item": "i%d" % (k % 31), "type": "click",
             "ts": 1.7e9 + k} for k in range(start, start + n)]


def trained(srv):
    return srv.log(1000000).count("ials trained")


def wait_trained(srv, n):
    deadline = time.monotonic() + 60
    while trained(srv) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return trained(srv)


def test_paused_schedule_trains_nothing_until_resumed(make_server):
    srv = make_server(extra_args=SCRIPTS)
    c = srv.connect(unix=True)
    assert c.call("model.schedule") == {"auto": True}
    assert c.call("model.schedule", {"auto": False}) == {"auto": False}
    c.call("event.add", *events(300))
    time.sleep(3.0)   # the schedule would have trained about a second in
    assert trained(srv) == 0, srv.log()
    # resumed, the schedule trains on what came while it was paused
    assert c.call("model.schedule", {"auto": True}) == {"auto": True}
    assert wait_trained(srv, 1) == 1, srv.log()
    # model.train still trains while the schedule is paused
    c.call("model.schedule", {"auto": False})
    c.call("event.add", *events(300, 300))
    c.call("model.train", {"model": "ials"})
    assert wait_trained(srv, 2) == 2, srv.log()
    c.close()


def test_schedule_checks_its_input_and_its_caller(make_server):
    srv = make_server(extra_args=SCRIPTS)
    with srv.connect(unix=True) as c:
        for bad, msg in (([1], "params[0] must be a map {auto?}"),
                         ({"auto": "no"}, "params[0].auto must be true or false")):
            with pytest.raises(RecdError) as e:
                c.call("model.schedule", bad)
            assert e.value.name == "invalid_params" and e.value.message == msg
        assert c.call("model.schedule") == {"auto": True}
    with srv.connect() as c:   # TCP without a token: an admin method
        with pytest.raises(RecdError) as e:
            c.call("model.schedule", {"auto": False})
        assert e.value.name == "unauthorized"
