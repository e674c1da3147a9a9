/* stats.c - attribution and live metrics (stats.h). */
#include "stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "value.h"



static rec_stats_metric *metric_get(rec_stats *st, const char *kind, const char *name) {
    char full[sizeof st->m[0].name];
    snprintf(full, sizeof full, "%s:%s", kind, name);
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->m[i].name, full) == 0)
            return &st->m[i];
    if (st->n == REC_STATS_MAX)
        return NULL;
    rec_stats_metric *m = &st->m[st->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", full);
    m->r_t = rec_now();
    return m;
}

static void metric_add(rec_stats_metric *m, double imp, double clk, double conv, double t) {
    if (!m)
        return;
    double f = t > m->r_t ? exp2(-(t - m->r_t) / REC_STATS_HALF_LIFE) : 1.0;
    if (t > m->r_t) {
        m->r_impressions *= f;
        m->r_clicks *= f;
        m->r_conversions *= f;
        m->r_t = t;
    }
    m->impressions += imp;
    m->clicks += clk;
    m->conversions += conv;
    m->r_impressions += imp;
    m->r_clicks += clk;
    m->r_conversions += conv;
}

void rec_stats_add(rec_stats *st, const char *kind, const char *name, double imp,
                   double clk, double conv, double t) {
    metric_add(metric_get(st, kind, name), imp, clk, conv, t);
}

/* Credit an event to the recommendation that showed its item: clicks for
 * type "click", conversions for "purchase" and "add_to_cart", to the
 * pipeline, its experiment arm and the strategy that placed the item. */
int rec_stats_attribute(rec_stats *st, rec_engine *e, const char *rec_id, size_t rlen,
                        uint32_t item, const char *type, size_t tlen, double ts) {
    int click = tlen == 5 && memcmp(type, "click", 5) == 0;
    int conv = (tlen == 8 && memcmp(type, "purchase", 8) == 0) ||
               (tlen == 11 && memcmp(type, "add_to_cart", 11) == 0);
    if ((!click && !conv) || rlen != 16)
        return 0;
    char hex[17];
    memcpy(hex, rec_id, 16);
    hex[16] = 0;
    char *end;
    unsigned long long id = strtoull(hex, &end, 16);
    if (*end)
        return 0;
    rec_buf b = REC_BUF_INIT;
    int rc = rec_engine_rec_get(e, id, &b);
    if (rc || b.len < 5) {
        rec_buf_free(&b);
        return rc == REC_ENOTFOUND;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    if (msgpack_unpack_next(&up, b.data + 4, b.len - 4, &off) == MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *items = rec_value_field(&up.data, "items");
        const msgpack_object *by = rec_value_field(&up.data, "by");
        const msgpack_object *strats = rec_value_field(&up.data, "strategies");
        const msgpack_object *pl = rec_value_field(&up.data, "pipeline");
        const msgpack_object *arm = rec_value_field(&up.data, "arm");
        for (uint32_t i = 0; items && items->type == MSGPACK_OBJECT_ARRAY &&
                             i < items->via.array.size; i++) {
            if (items->via.array.ptr[i].via.u64 != item)
                continue;
            char name[REC_PIPELINE_NAME_MAX + 1];
            if (pl && pl->type == MSGPACK_OBJECT_STR && pl->via.str.size <= REC_PIPELINE_NAME_MAX &&
                !(pl->via.str.size > 9 && memcmp(pl->via.str.ptr, "strategy:", 9) == 0)) {
                memcpy(name, pl->via.str.ptr, pl->via.str.size);
                name[pl->via.str.size] = 0;
                rec_stats_add(st, "pipeline", name, 0, click, conv, ts);
            }
            if (arm && arm->type == MSGPACK_OBJECT_STR && arm->via.str.size <= REC_PIPELINE_NAME_MAX) {
                memcpy(name, arm->via.str.ptr, arm->via.str.size);
                name[arm->via.str.size] = 0;
                rec_stats_add(st, "variant", name, 0, click, conv, ts);
            }
            if (by && by->type == MSGPACK_OBJECT_ARRAY && i < by->via.array.size &&
                strats && strats->type == MSGPACK_OBJECT_ARRAY) {
                uint64_t si = by->via.array.ptr[i].via.u64;
                if (si < strats->via.array.size &&
                    strats->via.array.ptr[si].type == MSGPACK_OBJECT_STR &&
                    strats->via.array.ptr[si].via.str.size <= REC_PIPELINE_NAME_MAX) {
                    memcpy(name, strats->via.array.ptr[si].via.str.ptr,
                           strats->via.array.ptr[si].via.str.size);
                    name[strats->via.array.ptr[si].via.str.size] = 0;
                    rec_stats_add(st, "strategy", name, 0, click, conv, ts);
                }
            }
            break;
        }
    }
    msgpack_unpacked_destroy(&up);
    rec_buf_free(&b);
    return 0;
}

void rec_stats_wilson(double k, double n, double *lo, double *hi) {
    if (n <= 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    const double z = 1.959964;
    double p = k / n, z2 = z * z;
    double den = 1 + z2 / n, mid = (p + z2 / (2 * n)) / den;
    double half = z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den;
    *lo = mid - half < 0 ? 0 : mid - half;
    *hi = mid + half > 1 ? 1 : mid + half;
}

static int pack_metric(msgpack_packer *pk, double imp, double clk, double conv) {
    double lo, hi;
    rec_stats_wilson(clk, imp, &lo, &hi);
    return msgpack_pack_map(pk, 6) || rec_value_pack_str(pk, "impressions") || msgpack_pack_double(pk, imp) ||
           rec_value_pack_str(pk, "clicks") || msgpack_pack_double(pk, clk) ||
           rec_value_pack_str(pk, "conversions") || msgpack_pack_double(pk, conv) ||
           rec_value_pack_str(pk, "ctr") || msgpack_pack_double(pk, imp > 0 ? clk / imp : 0) ||
           rec_value_pack_str(pk, "ctr_low") || msgpack_pack_double(pk, lo) ||
           rec_value_pack_str(pk, "ctr_high") || msgpack_pack_double(pk, hi);
}

int rec_stats_pack(const rec_stats *st, msgpack_packer *pk, double now) {
    static const char *kinds[] = {"pipeline", "variant", "strategy"};
    static const char *keys[] = {"pipelines", "variants", "strategies"};
    if (msgpack_pack_map(pk, 4) || rec_value_pack_str(pk, "recent_half_life_s") ||
        msgpack_pack_double(pk, REC_STATS_HALF_LIFE))
        return REC_ENOMEM;
    for (int k = 0; k < 3; k++) {
        size_t kn = strlen(kinds[k]);
        uint32_t cnt = 0;
        for (int i = 0; i < st->n; i++)
            cnt += strncmp(st->m[i].name, kinds[k], kn) == 0 && st->m[i].name[kn] == ':';
        if (rec_value_pack_str(pk, keys[k]) || msgpack_pack_map(pk, cnt))
            return REC_ENOMEM;
        for (int i = 0; i < st->n; i++) {
            const rec_stats_metric *m = &st->m[i];
            if (strncmp(m->name, kinds[k], kn) != 0 || m->name[kn] != ':')
                continue;
            double f = now > m->r_t ? exp2(-(now - m->r_t) / REC_STATS_HALF_LIFE) : 1.0;
            if (rec_value_pack_str(pk, m->name + kn + 1) || msgpack_pack_map(pk, 2) ||
                rec_value_pack_str(pk, "total") || pack_metric(pk, m->impressions, m->clicks, m->conversions) ||
                rec_value_pack_str(pk, "recent") ||
                pack_metric(pk, m->r_impressions * f, m->r_clicks * f, m->r_conversions * f))
                return REC_ENOMEM;
        }
    }
    return 0;
}
