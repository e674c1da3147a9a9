/* test_graph.c - the interaction graph: histories, audiences, exact
 * co-occurrence on handcrafted sequences, neighbours, forgetting users and
 * items, and random walks.
 *
 * Weights are small binary fractions (1, 0.5, 2, ...) so every sum and
 * difference is exact in float and co-occurrence can be compared with ==.
 * Random streams come from rec_rng with fixed seeds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "graph.h"

/* ---- helpers --------------------------------------------------------- */

static void add(rec_graph *g, uint32_t user, uint32_t item, float w) {
    double ts = 1000.0 + (double)g->events;
    assert_int_equal(rec_graph_add(g, user, item, ts, w, 1, 0), 0);
}

static void expect_cooc(rec_graph *g, uint32_t a, uint32_t b,
                        float want) {
    float ab = rec_graph_cooc(g, a, b), ba = rec_graph_cooc(g, b, a);
    if (ab != want || ba != want)
        fail_msg("cooc(%u,%u) = %g, cooc(%u,%u) = %g, want %g", a, b,
                 (double)ab, b, a, (double)ba, (double)want);
}

/* Every pair of items below n has the same weight in both graphs. */
static void expect_same_cooc(rec_graph *g, rec_graph *ref,
                             uint32_t n) {
    for (uint32_t a = 0; a < n; a++)
        for (uint32_t b = 0; b < n; b++) {
            float x = rec_graph_cooc(g, a, b), y = rec_graph_cooc(ref, a, b);
            if (x != y)
                fail_msg("cooc(%u,%u) = %g, reference %g", a, b, (double)x,
                         (double)y);
        }
}

static int audience_has(const rec_graph *g, uint32_t item, uint32_t user) {
    if (item >= g->nitems)
        return 0;
    for (uint32_t i = 0; i < g->aud[item].n; i++)
        if (g->aud[item].u[i] == user)
            return 1;
    return 0;
}

static int history_has(const rec_graph *g, uint32_t user, uint32_t item) {
    uint32_t n = 0;
    const rec_hentry *h = rec_graph_history(g, user, &n);
    for (uint32_t i = 0; i < n; i++)
        if (h[i].item == item)
            return 1;
    return 0;
}

static int hits_have(const rec_hit *h, size_t n, uint32_t idx) {
    for (size_t i = 0; i < n; i++)
        if (h[i].idx == idx)
            return 1;
    return 0;
}

enum { A = 1, B = 2, C = 3, D = 4 };

/* The worked example (window 2), for user `u`:
 *   a(1)          -> nothing before it
 *   b(2)          -> a:          ab += min(2,1) = 1
 *   c(1)          -> b, a:       bc += 1, ac += 1
 *   d(-1)         -> negative:   no edges, not in d's audience
 *   d(3)          -> c, b:       cd += 1, bd += 2   (a is out of the window)
 *   a(0.5)        -> d, c:       ad += 0.5, ac += 0.5
 * giving ab 1, ac 1.5, ad 0.5, bc 1, bd 2, cd 1. */
static void worked_example(rec_graph *g, uint32_t u) {
    add(g, u, A, 1.0f);
    add(g, u, B, 2.0f);
    add(g, u, C, 1.0f);
    add(g, u, D, -1.0f);
    add(g, u, D, 3.0f);
    add(g, u, A, 0.5f);
}

/* ---- history and co-occurrence --------------------------------------- */

static void test_history_order(void **state) {
    rec_graph g;
    rec_graph_init(&g, 3);
    assert_int_equal(g.window, 3);
    uint32_t n = 99;
    assert_null(rec_graph_history(&g, 0, &n));
    assert_int_equal(n, 0);

    const uint32_t items[] = {9, 2, 9, 70, 1, 2};
    const float w[] = {1.0f, -1.0f, 2.0f, 0.0f, 0.5f, 1.0f};
    for (int i = 0; i < 6; i++)
        assert_int_equal(rec_graph_add(&g, 5, items[i], 100.0 + i * 10, w[i],
                                       (uint16_t)(i + 1), (uint64_t)i + 1),
                         0);
    add(&g, 6, 9, 1.0f); /* another user in between */
    assert_int_equal(rec_graph_add(&g, 5, 3, 50.0, 1.0f, 7, 0), 0);

    const rec_hentry *h = rec_graph_history(&g, 5, &n);
    assert_int_equal(h[0].seq, 1);
    assert_int_equal(h[5].seq, 6);
    assert_non_null(h);
    assert_int_equal(n, 7);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(h[i].item, items[i]);
        assert_true(h[i].weight == w[i]);
        assert_true(h[i].ts == 100.0 + i * 10);
        assert_int_equal(h[i].type, i + 1);
    }
    /* Arrival order, not timestamp order. */
    assert_int_equal(h[6].item, 3);
    assert_true(h[6].ts == 50.0);
    h = rec_graph_history(&g, 6, &n);
    assert_int_equal(n, 1);
    assert_int_equal(h[0].item, 9);
    assert_null(rec_graph_history(&g, 4, &n));
    assert_int_equal(n, 0);
    assert_null(rec_graph_history(&g, 1000000, &n));
    assert_int_equal(g.events, 8);

    /* Audiences: positive interactions only, repeats kept. */
    assert_int_equal(g.aud[9].n, 3); /* 5, 5, 6 */
    assert_true(audience_has(&g, 9, 5) && audience_has(&g, 9, 6));
    assert_int_equal(g.aud[2].n, 1);
    assert_int_equal(g.aud[70].n, 0);

    /* A long history grows. */
    for (uint32_t i = 0; i < 5000; i++)
        add(&g, 7, i % 300, 1.0f);
    h = rec_graph_history(&g, 7, &n);
    assert_int_equal(n, 5000);
    for (uint32_t i = 0; i < 5000; i++)
        assert_int_equal(h[i].item, i % 300);
    rec_graph_close(&g);

    /* Window 0 means the default. */
    rec_graph_init(&g, 0);
    assert_int_equal(g.window, 5);
    rec_graph_close(&g);
}

static void test_cooc_exact(void **state) {
    rec_graph g;
    rec_graph_init(&g, 2);
    worked_example(&g, 0);
    expect_cooc(&g, A, B, 1.0f);
    expect_cooc(&g, A, C, 1.5f);
    expect_cooc(&g, A, D, 0.5f);
    expect_cooc(&g, B, C, 1.0f);
    expect_cooc(&g, B, D, 2.0f);
    expect_cooc(&g, C, D, 1.0f);
    for (uint32_t i = 0; i < 6; i++)
        expect_cooc(&g, i, i, 0.0f); /* never with itself */
    expect_cooc(&g, A, 0, 0.0f);
    expect_cooc(&g, A, 1000, 0.0f);
    expect_cooc(&g, 1000, 2000, 0.0f);
    assert_int_equal(rec_graph_edges(&g), 12); /* 6 pairs, both directions */

    /* A second user adds to the same pairs. */
    add(&g, 1, C, 0.5f);
    add(&g, 1, A, 2.0f); /* ac += 0.5 */
    add(&g, 1, B, 1.0f); /* ab += 1, bc += 0.5 */
    expect_cooc(&g, A, C, 2.0f);
    expect_cooc(&g, A, B, 2.0f);
    expect_cooc(&g, B, C, 1.5f);
    expect_cooc(&g, B, D, 2.0f);
    assert_int_equal(rec_graph_edges(&g), 12);

    /* Window 1 sees only the previous positive item; a wide window sees
     * all of them. */
    rec_graph g1, g9;
    rec_graph_init(&g1, 1);
    rec_graph_init(&g9, 9);
    worked_example(&g1, 0);
    worked_example(&g9, 0);
    expect_cooc(&g1, A, B, 1.0f); /* b -> a */
    expect_cooc(&g1, B, C, 1.0f); /* c -> b */
    expect_cooc(&g1, C, D, 1.0f); /* d(3) -> c */
    expect_cooc(&g1, A, D, 0.5f); /* a(0.5) -> d */
    expect_cooc(&g1, A, C, 0.0f);
    expect_cooc(&g1, B, D, 0.0f);
    expect_cooc(&g9, A, B, 1.5f); /* b -> a: 1; a(0.5) -> b: 0.5 */
    expect_cooc(&g9, A, C, 1.5f);
    expect_cooc(&g9, A, D, 1.5f); /* d(3) -> a(1): 1; a(0.5) -> d: 0.5 */
    expect_cooc(&g9, B, C, 1.0f);
    expect_cooc(&g9, B, D, 2.0f);
    expect_cooc(&g9, C, D, 1.0f);
    rec_graph_close(&g1);
    rec_graph_close(&g9);
    rec_graph_close(&g);
}

static void test_cooc_symmetric_random(void **state) {
    enum { USERS = 50, ITEMS = 40, EVENTS = 3000 };
    const float weights[] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 0.25f};
    rec_graph g;
    rec_graph_init(&g, 4);
    rec_rng r;
    rec_rng_seed(&r, 31);
    for (int e = 0; e < EVENTS; e++)
        add(&g, rec_rng_below(&r, USERS), rec_rng_below(&r, ITEMS),
            weights[rec_rng_below(&r, 6)]);
    uint64_t nonzero = 0;
    for (uint32_t a = 0; a < ITEMS; a++)
        for (uint32_t b = 0; b < ITEMS; b++) {
            float x = rec_graph_cooc(&g, a, b);
            assert_true(x == rec_graph_cooc(&g, b, a));
            assert_true(x >= 0.0f);
            nonzero += x != 0.0f;
        }
    assert_int_equal(nonzero, rec_graph_edges(&g));
    assert_int_equal(g.events, EVENTS);
    rec_graph_close(&g);
}


/* Co-occurrence owed by rec_graph_add and applied in batches gives what
 * applying each event at once gives: the same weights, summed in the same
 * order, and the same edge count, across many batches, one user's events
 * in one batch, and forgets in between. */
static void test_cooc_settled_in_batches(void **state) {
    enum { USERS = 30, ITEMS = 60, EVENTS = 5000 };
    const float weights[] = {1.0f, 0.5f, 2.0f, -1.0f, 0.25f, 0.75f};
    rec_graph g, ref;
    rec_graph_init(&g, 5);
    rec_graph_init(&ref, 5);
    rec_rng r;
    rec_rng_seed(&r, 77);
    for (int e = 0; e < EVENTS; e++) {
        uint32_t u = e % 500 < 100 ? 7 : rec_rng_below(&r, USERS); /* runs of one user */
        uint32_t it = rec_rng_below(&r, ITEMS);
        float w = weights[rec_rng_below(&r, 6)];
        add(&g, u, it, w);
        add(&ref, u, it, w);
        assert_int_equal(rec_graph_settle(&ref), 0);
        assert_true(ref.npend == 0);
        if (e % 1200 == 1199) {
            rec_graph_forget_user(&g, u);
            rec_graph_forget_user(&ref, u);
        } else if (e % 1700 == 1699) {
            rec_graph_forget_item(&g, it);
            rec_graph_forget_item(&ref, it);
        }
    }
    assert_true(g.npend > 0); /* some still owed: the reads below settle them */
    expect_same_cooc(&g, &ref, ITEMS);
    assert_true(g.npend == 0);
    assert_int_equal(rec_graph_edges(&g), rec_graph_edges(&ref));
    rec_hit a[8], b[8];
    add(&g, 3, 5, 1.0f);
    add(&ref, 3, 5, 1.0f);
    for (uint32_t it = 0; it < ITEMS; it++) { /* neighbours settle too */
        size_t na = rec_graph_neighbors(&g, it, NULL, 0, 8, a);
        size_t nb = rec_graph_neighbors(&ref, it, NULL, 0, 8, b);
        assert_int_equal(na, nb);
        for (size_t i = 0; i < na; i++) {
            assert_int_equal(a[i].idx, b[i].idx);
            assert_true(a[i].score == b[i].score);
        }
    }
    rec_graph_close(&g);
    rec_graph_close(&ref);
}

static void test_negative_feedback(void **state) {
    rec_graph g;
    rec_graph_init(&g, 5);
    add(&g, 0, A, 1.0f);
    add(&g, 0, B, -1.0f);
    add(&g, 0, C, 0.0f);
    add(&g, 0, D, -0.5f);
    add(&g, 1, B, -2.0f);
    assert_int_equal(rec_graph_edges(&g), 0);
    expect_cooc(&g, A, B, 0.0f);
    expect_cooc(&g, A, C, 0.0f);
    expect_cooc(&g, B, D, 0.0f);
    assert_int_equal(g.aud[B].n, 0);
    assert_int_equal(g.aud[C].n, 0);
    assert_int_equal(g.aud[D].n, 0);
    assert_int_equal(g.aud[A].n, 1);
    assert_int_equal(g.events, 5);

    /* Negative entries stay in history but are outside later windows:
     * e's window of 5 positive items holds only a. */
    add(&g, 0, 7, 1.0f);
    expect_cooc(&g, A, 7, 1.0f);
    expect_cooc(&g, B, 7, 0.0f);
    assert_int_equal(rec_graph_edges(&g), 2);

    rec_hit out[8];
    assert_int_equal(rec_graph_neighbors(&g, B, NULL, 0, 8, out), 0);
    /* A walk seeded at an item nobody liked goes nowhere. */
    rec_rng r;
    rec_rng_seed(&r, 1);
    uint32_t seed = B;
    assert_int_equal(
        rec_graph_walk(&g, &seed, NULL, 1, 100, 0.5, &r, NULL, 0, 8, out), 0);
    rec_graph_close(&g);
}

static void test_neighbors(void **state) {
    rec_graph g;
    rec_graph_init(&g, 2);
    worked_example(&g, 0);
    rec_hit out[8];
    /* b: d 2, then a and c tie at 1 (lower index first). */
    size_t n = rec_graph_neighbors(&g, B, NULL, 0, 8, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].idx, D);
    assert_true(out[0].score == 2.0f);
    assert_int_equal(out[1].idx, A);
    assert_int_equal(out[2].idx, C);
    assert_true(out[1].score == 1.0f && out[2].score == 1.0f);

    assert_int_equal(rec_graph_neighbors(&g, B, NULL, 0, 1, out), 1);
    assert_int_equal(out[0].idx, D);
    assert_int_equal(rec_graph_neighbors(&g, B, NULL, 0, 0, out), 0);

    uint64_t skip = 1ull << D;
    n = rec_graph_neighbors(&g, B, &skip, 1, 8, out);
    assert_int_equal(n, 2);
    assert_int_equal(out[0].idx, A);
    assert_int_equal(out[1].idx, C);
    /* A zero-length bitmap skips nothing. */
    assert_int_equal(rec_graph_neighbors(&g, B, &skip, 0, 8, out), 3);

    /* a: c 1.5, b 1, d 0.5 */
    n = rec_graph_neighbors(&g, A, NULL, 0, 8, out);
    assert_int_equal(n, 3);
    assert_int_equal(out[0].idx, C);
    assert_int_equal(out[1].idx, B);
    assert_int_equal(out[2].idx, D);

    /* Unknown items have no neighbours. */
    assert_int_equal(rec_graph_neighbors(&g, 0, NULL, 0, 8, out), 0);
    assert_int_equal(rec_graph_neighbors(&g, 999999, NULL, 0, 8, out), 0);

    /* Many neighbours (table growth), ranked by weight. */
    rec_graph h;
    rec_graph_init(&h, 100);
    /* cooc(0, j) = j: j users each see item 0 then item j. */
    for (uint32_t j = 1; j <= 60; j++)
        for (uint32_t t = 0; t < j; t++) {
            uint32_t u = t * 100 + j;
            add(&h, u, 0, 1.0f);
            add(&h, u, j, 1.0f);
        }
    n = rec_graph_neighbors(&h, 0, NULL, 0, 8, out);
    assert_int_equal(n, 8);
    for (uint32_t i = 0; i < 8; i++) {
        assert_int_equal(out[i].idx, 60 - i);
        assert_true(out[i].score == (float)(60 - i));
    }
    rec_graph_close(&h);
    rec_graph_close(&g);
}

/* ---- forgetting ------------------------------------------------------ */

static void test_forget_user(void **state) {
    rec_graph g, ref;
    rec_graph_init(&g, 2);
    rec_graph_init(&ref, 2);
    worked_example(&g, 0);
    /* user 1 in both graphs */
    const uint32_t it1[] = {B, C, 6, A, B};
    const float w1[] = {1.0f, 0.5f, 2.0f, -1.0f, 1.0f};
    for (int i = 0; i < 5; i++) {
        add(&g, 1, it1[i], w1[i]);
        add(&ref, 1, it1[i], w1[i]);
    }
    worked_example(&g, 2);
    uint64_t events = g.events;

    rec_graph_forget_user(&g, 0);
    rec_graph_forget_user(&g, 2);
    expect_same_cooc(&g, &ref, 8);
    uint32_t n = 1;
    assert_null(rec_graph_history(&g, 0, &n));
    assert_int_equal(n, 0);
    assert_int_equal(g.events, events - 12);
    for (uint32_t i = 0; i < 8; i++) {
        assert_false(audience_has(&g, i, 0));
        assert_false(audience_has(&g, i, 2));
    }
    assert_true(audience_has(&g, B, 1));
    assert_true(audience_has(&g, C, 1));

    /* Neighbours leave out pairs that only the forgotten users made. */
    rec_hit out[8];
    size_t k = rec_graph_neighbors(&g, D, NULL, 0, 8, out);
    assert_int_equal(k, 0);
    /* User 1 alone: c(0.5) -> b: bc 0.5; 6(2) -> c, b: c6 0.5, b6 1;
     * a is negative; b(1) -> 6, c: b6 1, bc 0.5. */
    k = rec_graph_neighbors(&g, B, NULL, 0, 8, out);
    assert_int_equal(k, 2);
    assert_int_equal(out[0].idx, 6);
    assert_int_equal(out[1].idx, C);
    assert_true(out[0].score == 2.0f && out[1].score == 1.0f);

    /* Forgetting unknown users is a no-op; the user can come back. */
    rec_graph_forget_user(&g, 0);
    rec_graph_forget_user(&g, 123456);
    worked_example(&g, 0);
    expect_cooc(&g, B, D, 2.0f);
    expect_cooc(&g, A, B, 1.0f);
    rec_graph_close(&ref);
    rec_graph_close(&g);
}

static void test_forget_item(void **state) {
    rec_graph g;
    rec_graph_init(&g, 2);
    worked_example(&g, 0);
    add(&g, 1, C, 1.0f);
    add(&g, 1, 6, 1.0f);
    add(&g, 2, C, -1.0f); /* negative feedback on c */
    add(&g, 2, 6, 1.0f);

    rec_graph_forget_item(&g, C);
    for (uint32_t i = 0; i < 8; i++)
        expect_cooc(&g, C, i, 0.0f);
    for (uint32_t u = 0; u < 3; u++)
        if (history_has(&g, u, C))
            fail_msg("user %u still has item %u in its history", u, C);
    assert_int_equal(g.aud[C].n, 0);
    rec_hit out[8];
    for (uint32_t i = 0; i < 8; i++) {
        size_t n = rec_graph_neighbors(&g, i, NULL, 0, 8, out);
        assert_false(hits_have(out, n, C));
    }
    /* The rest is what the remaining events build (as on reopen, where
     * the history of a deleted item is skipped). User 0 is now
     * a(1) b(2) d(-1) d(3) a(0.5): ab 1 + 0.5, bd 2, ad 1 + 0.5. */
    expect_cooc(&g, A, B, 1.5f);
    expect_cooc(&g, B, D, 2.0f);
    expect_cooc(&g, A, D, 1.5f);
    expect_cooc(&g, 6, A, 0.0f);
    uint32_t n = 0;
    rec_graph_history(&g, 0, &n);
    assert_int_equal(n, 5);
    rec_graph_history(&g, 2, &n);
    assert_int_equal(n, 1);
    assert_int_equal(g.events, 7);

    /* Walks never land on it. */
    rec_rng r;
    rec_rng_seed(&r, 3);
    uint32_t seeds[] = {A, 6};
    size_t k = rec_graph_walk(&g, seeds, NULL, 2, 2000, 0.3, &r, NULL, 0, 8,
                              out);
    assert_true(k > 0);
    assert_false(hits_have(out, k, C));
    rec_graph_forget_item(&g, C);      /* again: no-op */
    rec_graph_forget_item(&g, 999999); /* unknown: no-op */
    rec_graph_close(&g);
}

/* After an item is forgotten, the graph must be what the remaining events
 * would have built, so that forgetting users later takes back exactly what
 * is there and a rebuild from history gives the same graph. */
static void test_forget_item_then_users(void **state) {
    enum { USERS = 12, ITEMS = 10, EVENTS = 400, GONE = 4 };
    const float weights[] = {1.0f, 0.5f, 2.0f, -1.0f};
    rec_graph g, ref;
    rec_graph_init(&g, 3);
    rec_graph_init(&ref, 3);
    rec_rng r;
    rec_rng_seed(&r, 17);
    for (int e = 0; e < EVENTS; e++) {
        uint32_t u = rec_rng_below(&r, USERS), i = rec_rng_below(&r, ITEMS);
        float w = weights[rec_rng_below(&r, 4)];
        add(&g, u, i, w);
        if (i != GONE)
            add(&ref, u, i, w);
    }
    rec_graph_forget_item(&g, GONE);
    expect_same_cooc(&g, &ref, ITEMS);
    for (uint32_t u = 0; u < USERS; u++) {
        uint32_t n1 = 0, n2 = 0;
        const rec_hentry *h1 = rec_graph_history(&g, u, &n1);
        const rec_hentry *h2 = rec_graph_history(&ref, u, &n2);
        assert_int_equal(n1, n2);
        for (uint32_t i = 0; i < n1; i++) {
            assert_int_equal(h1[i].item, h2[i].item);
            assert_true(h1[i].weight == h2[i].weight);
        }
    }
    assert_int_equal(g.events, ref.events);

    /* Forgetting every user leaves no weight behind, positive or negative. */
    for (uint32_t u = 0; u < USERS; u++)
        rec_graph_forget_user(&g, u);
    for (uint32_t a = 0; a < ITEMS; a++)
        for (uint32_t b = 0; b < ITEMS; b++)
            if (rec_graph_cooc(&g, a, b) != 0.0f)
                fail_msg("cooc(%u,%u) = %g after forgetting everyone", a, b,
                         (double)rec_graph_cooc(&g, a, b));
    assert_int_equal(g.events, 0);
    rec_graph_close(&ref);
    rec_graph_close(&g);
}

/* ---- random walks ---------------------------------------------------- */

/* Two communities: users 0..9 like items 0..9, users 10..19 like items
 * 10..19, each user four items of its own community. */
static void two_communities(rec_graph *g) {
    rec_graph_init(g, 5);
    rec_rng r;
    rec_rng_seed(&r, 11);
    for (uint32_t u = 0; u < 20; u++) {
        uint32_t base = u < 10 ? 0 : 10;
        add(g, u, base + u % 10, 1.0f); /* every item has an audience */
        for (int j = 0; j < 3; j++)
            add(g, u, base + rec_rng_below(&r, 10), 1.0f);
        /* negative feedback across the divide must not bridge it */
        add(g, u, (base + 10) % 20 + rec_rng_below(&r, 10), -1.0f);
    }
}

static void test_walk_stays_in_community(void **state) {
    rec_graph g;
    two_communities(&g);
    rec_rng r;
    rec_rng_seed(&r, 5);
    rec_hit out[20];
    uint32_t seed = 3;
    size_t n = rec_graph_walk(&g, &seed, NULL, 1, 10000, 0.2, &r, NULL, 0, 20,
                              out);
    assert_true(n >= 5);
    float total = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].idx >= 10)
            fail_msg("walk from item 3 reached item %u", out[i].idx);
        assert_true(out[i].score >= 1.0f);
        if (i > 0)
            assert_true(rec_hit_cmp(&out[i - 1], &out[i]) < 0);
        total += out[i].score;
    }
    assert_true(total <= 10000.0f);

    /* Seeds in the other community, weighted: a zero-weight seed is never
     * used. */
    uint32_t seeds[] = {3, 15};
    float sw[] = {0.0f, 1.0f};
    n = rec_graph_walk(&g, seeds, sw, 2, 5000, 0.3, &r, NULL, 0, 20, out);
    assert_true(n >= 5);
    for (size_t i = 0; i < n; i++)
        assert_true(out[i].idx >= 10 && out[i].idx < 20);

    /* All seeds weightless, no seeds, no steps: nothing. */
    float zero[] = {0.0f, 0.0f};
    assert_int_equal(
        rec_graph_walk(&g, seeds, zero, 2, 100, 0.3, &r, NULL, 0, 20, out), 0);
    assert_int_equal(
        rec_graph_walk(&g, seeds, NULL, 0, 100, 0.3, &r, NULL, 0, 20, out), 0);
    assert_int_equal(
        rec_graph_walk(&g, seeds, NULL, 2, 0, 0.3, &r, NULL, 0, 20, out), 0);
    /* Seeds outside the graph: nothing, no crash. */
    uint32_t far[] = {500000};
    assert_int_equal(
        rec_graph_walk(&g, far, NULL, 1, 100, 0.3, &r, NULL, 0, 20, out), 0);
    rec_graph_close(&g);
}

static void test_walk_deterministic_and_skip(void **state) {
    rec_graph g;
    two_communities(&g);
    uint32_t seeds[] = {2, 12};
    rec_hit a[20], b[20];
    rec_rng r1, r2;
    rec_rng_seed(&r1, 99);
    rec_rng_seed(&r2, 99);
    size_t na = rec_graph_walk(&g, seeds, NULL, 2, 10000, 0.1, &r1, NULL, 0,
                               20, a);
    size_t nb = rec_graph_walk(&g, seeds, NULL, 2, 10000, 0.1, &r2, NULL, 0,
                               20, b);
    assert_int_equal(na, nb);
    assert_true(na >= 10);
    assert_memory_equal(a, b, na * sizeof *a);
    /* Both communities were reached through the two seeds. */
    int lo = 0, hi = 0;
    for (size_t i = 0; i < na; i++)
        *(a[i].idx < 10 ? &lo : &hi) += 1;
    assert_true(lo > 0 && hi > 0);

    /* Scratch is reset between walks: a second walk with a fresh generator
     * of the same seed gives the same counts again. */
    rec_rng_seed(&r1, 99);
    nb = rec_graph_walk(&g, seeds, NULL, 2, 10000, 0.1, &r1, NULL, 0, 20, b);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);

    /* Skip the best item and the seeds: none of them come back, and the
     * rest keep their counts. */
    uint64_t skip = 1ull << a[0].idx | 1ull << 2 | 1ull << 12;
    rec_rng_seed(&r1, 99);
    nb = rec_graph_walk(&g, seeds, NULL, 2, 10000, 0.1, &r1, &skip, 1, 20, b);
    assert_true(nb > 0);
    for (size_t i = 0; i < nb; i++) {
        assert_true(b[i].idx != a[0].idx && b[i].idx != 2 && b[i].idx != 12);
        size_t j = 0;
        while (j < na && a[j].idx != b[i].idx)
            j++;
        assert_true(j < na);
        assert_true(a[j].score == b[i].score);
    }
    /* k smaller than the items visited: the top of the same ranking. */
    rec_rng_seed(&r1, 99);
    nb = rec_graph_walk(&g, seeds, NULL, 2, 10000, 0.1, &r1, NULL, 0, 3, b);
    assert_int_equal(nb, 3);
    assert_memory_equal(a, b, 3 * sizeof *a);
    rec_graph_close(&g);
}

/* The answer rec_graph_neighbors must give: every neighbour of item with
 * a weight above 1e-6, not skipped, by weight then index. */
static size_t brute_neighbors(rec_graph *g, uint32_t item, uint32_t bound,
                              const uint64_t *skip, size_t k, rec_hit *out) {
    rec_topk tk;
    rec_topk_init(&tk, out, k);
    for (uint32_t j = 0; j < bound; j++) {
        float w = j == item ? 0.0f : rec_graph_cooc(g, item, j);
        if (w > 1e-6f && !(skip && skip[j >> 6] >> (j & 63) & 1))
            rec_topk_push(&tk, j, w);
    }
    return rec_topk_finish(&tk);
}

static void expect_neighbors(rec_graph *g, uint32_t item, uint32_t bound,
                             const uint64_t *skip, size_t words, size_t k) {
    rec_hit got[300], want[300];
    size_t n = rec_graph_neighbors(g, item, skip, words, k, got);
    size_t m = brute_neighbors(g, item, bound, skip, k, want);
    assert_int_equal(n, m);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(got[i].idx, want[i].idx);
        assert_true(got[i].score == want[i].score);
    }
}

/* A long row keeps its ranked head between changes: the answers equal a
 * full ranking whatever the skip map (including one that leaves fewer
 * than k in the head), and follow every change of the row. */
static void test_neighbors_ranked_head(void **state) {
    (void)state;
    enum { HUB = 0, ITEMS = 300 };
    rec_graph g;
    rec_graph_init(&g, 4);
    uint32_t user = 0;
    for (uint32_t j = 1; j <= ITEMS; j++) {
        for (uint32_t r = 0; r <= j % 13; r++, user++) {
            add(&g, user, HUB, 1.0f);
            add(&g, user, j, 1.0f);
        }
    }
    assert_true(g.cooc[HUB].n > REC_GRAPH_TOP_MIN);
    uint64_t none[5] = {0}, some[5] = {0}, most[5];
    for (uint32_t j = 0; j < 320; j += 3)
        some[j >> 6] |= 1ull << (j & 63);
    memset(most, 0xff, sizeof most);
    for (uint32_t j = 1; j <= ITEMS; j += 37)
        most[j >> 6] &= ~(1ull << (j & 63));
    size_t ks[] = {1, 10, 30, 128, 200};
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
            expect_neighbors(&g, HUB, ITEMS + 1, NULL, 0, ks[i]);
            expect_neighbors(&g, HUB, ITEMS + 1, none, 5, ks[i]);
            expect_neighbors(&g, HUB, ITEMS + 1, some, 5, ks[i]);
            expect_neighbors(&g, HUB, ITEMS + 1, most, 5, ks[i]);
        }
        if (round == 0) { /* new weight for one neighbour: it leads */
            for (uint32_t r = 0; r < 20; r++, user++) {
                add(&g, user, HUB, 1.0f);
                add(&g, user, 250, 1.0f);
            }
            rec_hit top[1];
            assert_int_equal(rec_graph_neighbors(&g, HUB, NULL, 0, 1, top), 1);
            assert_int_equal(top[0].idx, 250);
        } else if (round == 1) {
            rec_graph_forget_user(&g, user - 1);
        } else if (round == 2) {
            rec_graph_forget_item(&g, 250);
        }
    }
    assert_int_equal(g.top_rows, 1);
    rec_graph_close(&g);

    /* Past the budget of ranked heads, rows are scanned whole: the same
     * answers, no more heads. */
    rec_graph_init(&g, 4);
    g.top_budget = 1;
    user = 0;
    for (uint32_t hub = 0; hub < 2; hub++)
        for (uint32_t j = 2; j < 2 + ITEMS; j++, user++) {
            add(&g, user, hub, 1.0f);
            add(&g, user, j, (float)(1 + j % 3));
        }
    for (uint32_t hub = 0; hub < 2; hub++)
        for (size_t i = 0; i < sizeof ks / sizeof *ks; i++)
            expect_neighbors(&g, hub, ITEMS + 2, some, 5, ks[i]);
    assert_int_equal(g.top_rows, 1);
    assert_true(g.cooc[0].top != NULL && g.cooc[1].top == NULL);
    rec_graph_close(&g);
}

/* A ranked head follows raises of its row's weights without a rescan
 * (the row stays fresh): the writes note them, the next read puts them in
 * place: neighbours entering it, moving up in it, pushing its last out,
 * and new neighbours, on a row past REC_GRAPH_TOP_CAP and on one whose
 * head holds every neighbour. More notes than fit drop the head. */
static void test_neighbors_head_follows_raises(void **state) {
    (void)state;
    enum { HUB = 0, SMALL = 1, ITEMS = 400, NEW = 60 };
    rec_graph g;
    rec_graph_init(&g, 4);
    uint32_t user = 0;
    for (uint32_t j = 2; j < 2 + ITEMS; j++)
        for (uint32_t r = 0; r <= j % 7; r++, user++) {
            add(&g, user, HUB, 1.0f);
            add(&g, user, j, (float)(1 + j % 3) / 2.0f);
            if (j < 2 + 100) {
                add(&g, user, SMALL, 1.0f);
            }
        }
    assert_true(g.cooc[HUB].n > REC_GRAPH_TOP_CAP);
    assert_true(g.cooc[SMALL].n > REC_GRAPH_TOP_MIN && g.cooc[SMALL].n < REC_GRAPH_TOP_CAP);
    rec_hit h[REC_GRAPH_TOP_CAP];
    assert_true(rec_graph_neighbors(&g, HUB, NULL, 0, 10, h) == 10);
    assert_true(rec_graph_neighbors(&g, SMALL, NULL, 0, 10, h) == 10);
    rec_rng rng;
    rec_rng_seed(&rng, 17);
    const float ws[] = {0.5f, 1.0f, 2.0f};
    size_t ks[] = {1, 50, REC_GRAPH_TOP_CAP};
    for (int ev = 0; ev < 3000; ev++, user++) {
        uint32_t hub = rec_rng_below(&rng, 4) ? HUB : SMALL;
        uint32_t j = 2 + rec_rng_below(&rng, ITEMS + NEW);
        add(&g, user, hub, ws[rec_rng_below(&rng, 3)]);
        add(&g, user, j, ws[rec_rng_below(&rng, 3)]);
        /* a read after each event: its raise, noted, goes into the head */
        (void)rec_graph_settle(&g);
        assert_int_equal(g.cooc[HUB].fresh, 1);
        assert_int_equal(g.cooc[SMALL].fresh, 1);
        assert_true(g.cooc[hub].npend <= 1);
        assert_true(rec_graph_neighbors(&g, hub, NULL, 0, 1, h) == 1);
        assert_int_equal(g.cooc[hub].npend, 0);
        if (ev % 25)
            continue;
        for (size_t i = 0; i < sizeof ks / sizeof *ks; i++) {
            expect_neighbors(&g, HUB, 2 + ITEMS + NEW, NULL, 0, ks[i]);
            expect_neighbors(&g, SMALL, 2 + ITEMS + NEW, NULL, 0, ks[i]);
        }
    }
    assert_int_equal(g.cooc[HUB].ntop, REC_GRAPH_TOP_CAP);
    /* More raises into the head than it notes, with no read between: the
     * head is dropped and ranked again whole, as exact. */
    for (int ev = 0; ev < 40; ev++, user++) {
        add(&g, user, HUB, 2.0f);
        add(&g, user, 2 + (uint32_t)ev % 5, 2.0f);
    }
    (void)rec_graph_settle(&g);
    assert_int_equal(g.cooc[HUB].fresh, 0);
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++)
        expect_neighbors(&g, HUB, 2 + ITEMS + NEW, NULL, 0, ks[i]);
    assert_int_equal(g.cooc[HUB].fresh, 1);
    rec_graph_close(&g);
}

/* Visit share of item it among hits (0 when absent). */
static double share(const rec_hit *h, size_t n, uint32_t it, double steps) {
    for (size_t i = 0; i < n; i++)
        if (h[i].idx == it)
            return (double)h[i].score / steps;
    return 0.0;
}

/* Fails unless |got - want| is within 5 standard deviations of a share
 * estimated from `steps` draws (plus the slack the walkers' extra starts
 * from the seed allow when steps are chained). */
static void expect_share(double got, double want, double steps,
                         double slack, const char *what) {
    double sd = sqrt(want * (1.0 - want) / steps);
    if (fabs(got - want) > 5.0 * sd + slack)
        fail_msg("%s: visit share %.4f, want %.4f", what, got, want);
}

/* With restart 1 every step starts from the seed, so each visit is an
 * independent draw of the one-step law: a user of the seed's audience
 * uniformly (repeats kept), then one of that user's entries uniformly.
 * Seed S = 0 liked by users 0..3; user 0 also liked A, user 1 A and B,
 * user 2 B, C and D, user 3 nothing else. Negative entries are redrawn
 * (user 4, in no audience of S, holds only them and is never reached). */
static void test_walk_one_step_law(void **state) {
    enum { S = 0, STEPS = 40000 };
    rec_graph g;
    rec_graph_init(&g, 5);
    add(&g, 0, S, 1.0f);
    add(&g, 0, A, 1.0f);
    add(&g, 1, S, 1.0f);
    add(&g, 1, A, 1.0f);
    add(&g, 1, B, 1.0f);
    add(&g, 2, S, 1.0f);
    add(&g, 2, B, 1.0f);
    add(&g, 2, C, 1.0f);
    add(&g, 2, D, 1.0f);
    add(&g, 3, S, 1.0f);
    add(&g, 4, 7, -1.0f);
    rec_rng r;
    rec_rng_seed(&r, 21);
    uint32_t seed = S;
    rec_hit out[8];
    size_t n = rec_graph_walk(&g, &seed, NULL, 1, STEPS, 1.0, &r, NULL, 0, 8,
                              out);
    assert_int_equal(n, 5);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)out[i].score;
    /* No step can fail here: every step counts one visit. */
    assert_true(sum == STEPS);
    expect_share(share(out, n, S, STEPS), (0.5 + 1.0 / 3 + 0.25 + 1.0) / 4, STEPS, 0, "S");
    expect_share(share(out, n, A, STEPS), (0.5 + 1.0 / 3) / 4, STEPS, 0, "A");
    expect_share(share(out, n, B, STEPS), (1.0 / 3 + 0.25) / 4, STEPS, 0, "B");
    expect_share(share(out, n, C, STEPS), 0.0625, STEPS, 0, "C");
    expect_share(share(out, n, D, STEPS), 0.0625, STEPS, 0, "D");

    /* Fewer steps than walkers, and a single step: exactly that many
     * visits. */
    for (uint32_t steps = 1; steps <= 70; steps += 23) {
        n = rec_graph_walk(&g, &seed, NULL, 1, steps, 0.3, &r, NULL, 0, 8, out);
        sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += (double)out[i].score;
        assert_true(sum == steps);
    }
    rec_graph_close(&g);
}

/* Without restarts the walk is a Markov chain over items and its visits
 * follow the chain's stationary law. A path S - A - B: user 0 liked S and
 * A, user 1 liked A and B. From S: S or A, 1/2 each; from A: S 1/4, A 1/2,
 * B 1/4; from B: A or B. Stationary (1/4, 1/2, 1/4): B, two hops from the
 * seed, is reached only by walks that keep going. */
static void test_walk_stationary_law(void **state) {
    enum { S = 0, STEPS = 200000 };
    rec_graph g;
    rec_graph_init(&g, 5);
    add(&g, 0, S, 1.0f);
    add(&g, 0, A, 1.0f);
    add(&g, 1, A, 1.0f);
    add(&g, 1, B, 1.0f);
    rec_rng r;
    rec_rng_seed(&r, 23);
    uint32_t seed = S;
    rec_hit out[8];
    size_t n = rec_graph_walk(&g, &seed, NULL, 1, STEPS, 0.0, &r, NULL, 0, 8,
                              out);
    assert_int_equal(n, 3);
    /* Consecutive visits are correlated: a wider band than i.i.d. draws. */
    expect_share(share(out, n, S, STEPS), 0.25, STEPS, 0.01, "S");
    expect_share(share(out, n, A, STEPS), 0.5, STEPS, 0.01, "A");
    expect_share(share(out, n, B, STEPS), 0.25, STEPS, 0.01, "B");
    rec_graph_close(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history_order),
        cmocka_unit_test(test_cooc_exact),
        cmocka_unit_test(test_cooc_symmetric_random),
        cmocka_unit_test(test_cooc_settled_in_batches),
        cmocka_unit_test(test_negative_feedback),
        cmocka_unit_test(test_neighbors),
        cmocka_unit_test(test_neighbors_ranked_head),
        cmocka_unit_test(test_neighbors_head_follows_raises),
        cmocka_unit_test(test_forget_user),
        cmocka_unit_test(test_forget_item),
        cmocka_unit_test(test_forget_item_then_users),
        cmocka_unit_test(test_walk_stays_in_community),
        cmocka_unit_test(test_walk_deterministic_and_skip),
        cmocka_unit_test(test_walk_one_step_law),
        cmocka_unit_test(test_walk_stationary_law),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
