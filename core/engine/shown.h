/* shown.h - what each person was shown and did not engage with.
 *
 * Per user (by encoded key, so a person with no event yet counts too), up
 * to REC_SHOWN_PER_USER items (room grows with the person's lists) with how much lists showed them since the
 * person last engaged with them, and when last. A showing weighs by its
 * position as people look at lists: 1 / log2(2 + position), 1 at the top,
 * 0.29 in the tenth slot (an item ignored at the bottom of a list says
 * less than one ignored at the top). Recorded by the server for
 * every list it serves (not for previews); an engagement (a positive
 * event) clears the item; strategies read it to leave out or push down
 * what keeps being ignored. Request state: kept in memory only, not logged
 * (a restart forgets it, as it forgets the impressions counter's last
 * checkpoint interval). At most REC_SHOWN_MAX_USERS people are tracked;
 * past that, new people are not (counted in dropped).
 */
#ifndef REC_SHOWN_H
#define REC_SHOWN_H

#include <stddef.h>
#include <stdint.h>

#define REC_SHOWN_PER_USER 256
#define REC_SHOWN_MAX_USERS (1u << 20)

typedef struct rec_shown_entry {
    uint32_t item;
    uint32_t count; /* lists that showed it since the last engagement */
    float weight;   /* those showings, each weighed by its position */
    double ts;      /* when last shown */
} rec_shown_entry;

typedef struct rec_shown rec_shown;

int rec_shown_new(rec_shown **out);
void rec_shown_free(rec_shown *s); /* NULL is a no-op */

/* One list of n items (in their order: items[0] at the top) shown to user
 * (key ukey) at ts. REC_ENOMEM leaves what was recorded before. */
int rec_shown_add(rec_shown *s, const char *ukey, size_t ulen, const uint32_t *items, size_t n,
                  double ts);
/* The person engaged with item: it starts again from nothing. */
void rec_shown_clear(rec_shown *s, const char *ukey, size_t ulen, uint32_t item);
/* The person is forgotten. */
void rec_shown_forget(rec_shown *s, const char *ukey, size_t ulen);
/* The person's entries (NULL, 0 when none), in no order. */
const rec_shown_entry *rec_shown_list(const rec_shown *s, const char *ukey, size_t ulen,
                                      uint32_t *n);
/* People tracked, and people not tracked for want of room. */
void rec_shown_counts(const rec_shown *s, size_t *users, uint64_t *dropped);

#endif
