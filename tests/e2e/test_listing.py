"""item.list, user.list and user.history: paging through the catalogue,
the users and a user's whole history, with clear errors for bad options."""
import pytest

from recd_client import RecdError


def page_all(c, method, *lead, **opts):
    ids, cursor, pages = [], None, 0
    while True:
        o = dict(opts)
        if cursor is not None:
            o["cursor"] = cursor
        r = c.call(method, *lead, o)
        ids += r["ids"] if "ids" in r else r["history"]
        pages += 1
        cursor = r["cursor"]
        if cursor is None:
            return ids, pages


def test_items_and_users_page_through_everything(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("item.put", *[{"id": "li%03d" % i, "active": i % 3 != 0} for i in range(250)])
        c.call("item.put", {"id": 7})
        c.call("event.add", *[{"user": "lu%d" % u, "item": "li%03d" % u, "type": "view"}
                              for u in range(30)])
        c.call("item.delete", "li010", "li011")
        ids, pages = page_all(c, "item.list", n=40)
        want = ["li%03d" % i for i in range(250) if i not in (10, 11)] + [7]
        assert ids == want and pages == 7
        active, _ = page_all(c, "item.list", n=64, active=True)
        assert active == [i for i in want if i == 7 or int(i[2:]) % 3 != 0]
        inactive, _ = page_all(c, "item.list", active=False)
        assert sorted(inactive, key=str) == sorted(set(want) - set(active), key=str)
        users, _ = page_all(c, "user.list", n=7)
        assert users == ["lu%d" % u for u in range(30)]
        # the default page and the last cursor
        r = c.call("item.list")
        assert len(r["ids"]) == 100 and r["cursor"] is not None
        assert c.call("user.list", {"n": 30}) == {"ids": users, "cursor": None}


def test_user_history_pages_newest_first(make_server):
    srv = make_server()
    with srv.connect() as c:
        c.call("event.add", *[{"user": "hu", "item": "hi%d" % i, "type": "click", "ts": 1000 + i}
                              for i in range(230)])
        hist, pages = page_all(c, "user.history", "hu", n=100)
        assert pages == 3 and [h["item"] for h in hist] == ["hi%d" % i for i in reversed(range(230))]
        assert all(h["type"] == "click" and h["weight"] == 2 for h in hist)
        assert hist[0]["ts"] == 1229
        assert c.call("user.history", "nobody") == {"history": [], "cursor": None}


@pytest.mark.parametrize("method,params,name,needle", [
    ("item.list", [{"n": 0}], "out_of_range", "n must be 1..10000"),
    ("item.list", [{"n": 10001}], "out_of_range", "n must be 1..10000"),
    ("item.list", [{"cursor": "x"}], "invalid_params", "cursor"),
    ("item.list", [{"active": 1}], "invalid_params", "active must be true or false"),
    ("user.list", [{"active": True}], "invalid_params", "users have no active flag"),
    ("user.list", [5], "invalid_params", "must be a map"),
    ("user.history", [], "invalid_params", "params[0] (user) is missing"),
])
def test_listing_refuses_bad_options(client, method, params, name, needle):
    with pytest.raises(RecdError) as ei:
        client.call(method, *params)
    assert ei.value.name == name, ei.value
    assert needle in ei.value.message, ei.value.message
