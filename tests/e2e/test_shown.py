"""What each person was shown: the server records its lists (not previews),
a positive event clears an item, and the default pipeline leaves out what
a person was shown prominently without engaging, reaching further
instead."""
from conftest import ROOT

SCRIPTS = ["--scripts", str(ROOT / "scripts"), "--policies", str(ROOT / "policies")]


def shown(c, user):
    (m,) = c.call("admin.eval", 'return rec:shown("%s")' % user)
    return m or {}


def ids(answer):
    return [h["id"] for h in answer["items"]]


def test_lists_shown_are_remembered_and_reached_past(make_server):
    srv = make_server(extra_args=SCRIPTS)
    c = srv.connect(unix=True)
    c.call("item.put", *[{"id": "i%d" % k, "props": {"category": "c%d" % (k % 4)}}
                         for k in range(60)])
    # some popularity so the pipeline has a ranking to repeat
    c.call("event.add", *[{"user": "p%d" % (k % 13), "item": "i%d" % (k % 40), "type": "click"}
                          for k in range(400)])
    # previews are shown to nobody: nothing recorded
    c.call("rec.recommend", {"user": "x", "n": 5, "record": False})
    assert shown(c, "x") == {}
    first = ids(c.call("rec.recommend", {"user": "x", "n": 5}))
    assert len(first) == 5 and set(shown(c, "x")) == set(first)
    w = shown(c, "x")   # weighed by position: 1 at the top, less below
    assert w[first[0]] == 1.0 and all(w[first[k]] < w[first[k - 1]] for k in range(1, 5))
    second = ids(c.call("rec.recommend", {"user": "x", "n": 5}))
    weights = shown(c, "x")
    assert set(weights) == set(first) | set(second)
    # what weighs 0.6 or more (the hybrid's SHOWN_SKIP: the top two slots
    # of one list, or lower ones shown again) is left out of the next list
    heavy = {i for i, w in weights.items() if w >= 0.6}
    assert heavy
    third = ids(c.call("rec.recommend", {"user": "x", "n": 5}))
    assert len(third) == 5
    assert not heavy & set(third), (weights, third)
    # an engagement clears the item (and seen_by keeps it out as history)
    c.call("event.add", {"user": "x", "item": second[0], "type": "click"})
    assert second[0] not in shown(c, "x")
    # a person forgotten is forgotten here too
    c.call("user.delete", "x")
    assert shown(c, "x") == {}
    c.close()
