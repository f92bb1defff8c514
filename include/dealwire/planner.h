/*
 * planner — the trip planner behind POST /api/ai/trip/plan (documented in docs/protocol.md).
 *
 * A request names a user, a route (city codes), dates, a budget and a party size. The planner
 * validates it, searches the flights of the route on the dates and the destination's hotels
 * (one statement each, through the calling worker's store), ranks every combination that fits
 * the budget by a fit score, keeps the best DW_PLANNER_MAX_OPTIONS, stores the plan in
 * trip_plans and answers with it. While it works it sends trip_update events to the user's
 * connections (0, 30, 60, 80, 100 %; or 100 % "failed"); a user with no connection simply
 * gets none.
 *
 * The pure parts (request validation, cost, fit score, ranking) are public so that they can
 * be tested without a database.
 *
 * Cost of an option: every flight's price × travelers, plus the hotel's price per night ×
 * nights × rooms, with rooms = ceil(travelers / 2). Nights: return date - depart date, at
 * least 1; a one-way trip (no return date) books one night.
 *
 * Fit score, in 0..1 (rounded to 2 decimals): 0.4 × cost fit (1 - cost / budget) + 0.3 ×
 * stops fit (1 / (1 + stops over the preferred maximum, summed over the flights; the
 * preferred maximum is 0 without a preference)) + 0.3 × hotel fit (1 at or above the preferred
 * minimum rating, else half of rating / minimum; rating / 5 without a preference; 0.5 when
 * the hotel has no rating). A preference that is not met thus at least halves its part.
 * Options are ranked by fit score, best first, then by cost, cheapest first.
 */
#ifndef DEALWIRE_PLANNER_H
#define DEALWIRE_PLANNER_H

#include <stdbool.h>
#include <stddef.h>

struct dw_hub;
struct dw_inbox;
struct dw_db;

/* How many options an answer carries at most. */
#define DW_PLANNER_MAX_OPTIONS 5

/* How many flights per direction, and hotels, the search reads at most. */
#define DW_PLANNER_SEARCH_LIMIT 40

/* The most travelers one request may plan for. */
#define DW_PLANNER_MAX_TRAVELERS 9

/* A validated request. Strings are copies, NUL-terminated. */
struct dw_plan_request {
    char user_id[129];
    char origin[4];
    char destination[4];
    char depart_date[11];
    char return_date[11]; /* "" for a one-way trip */
    double budget;        /* > 0 */
    int travelers;        /* 1..DW_PLANNER_MAX_TRAVELERS */
    int max_stops;        /* preferred maximum stops per flight; -1 when not given */
    double min_rating;    /* preferred minimum hotel rating; 0 when not given */
    int nights;           /* hotel nights, >= 1 */
};

/* A validation failure: a message and the field it is about (e.g. "preferences.max_stops").
 * Both point to static strings. */
struct dw_plan_error {
    const char *message;
    const char *field;
};

/* A flight as the search returns it. Strings are borrowed (from the query result). */
struct dw_plan_flight {
    const char *id;
    const char *airline;
    const char *depart_at;
    const char *arrive_at;
    double price; /* per traveler */
    int stops;
};

/* A hotel as the search returns it. Strings are borrowed. */
struct dw_plan_hotel {
    const char *id;
    const char *name;
    double price_per_night; /* per room */
    double rating;          /* 0..5, or -1 when unknown */
};

/* One ranked combination: indexes into the arrays given to dw_planner_rank(); inbound is -1
 * for a one-way trip. */
struct dw_plan_option {
    int outbound, inbound, hotel;
    double total_cost;
    double fit_score;
};

/* thread: any. Parses and validates body (len bytes of JSON) into *out. Returns 0, or
 * -EINVAL with *err saying which field is wrong (missing or of the wrong type, a date that is
 * not YYYY-MM-DD or not in the calendar, a return before the departure, a budget <= 0,
 * travelers outside 1..9, a city code that is not three capital letters, the same origin and
 * destination, a user id the WebSocket endpoint would refuse, a bad preference). */
int dw_planner_parse(const char *body, size_t len, struct dw_plan_request *out,
                     struct dw_plan_error *err);

/* thread: any. Days since 1970-01-01 of the date s ("YYYY-MM-DD", a real calendar day, years
 * 1900..9999) in *days. Returns true when s is such a date. */
bool dw_planner_parse_date(const char *s, long *days);

/* thread: any. The total cost of one option for req (see the top of this file); inbound may
 * be NULL (one way). */
double dw_planner_cost(const struct dw_plan_request *req, const struct dw_plan_flight *outbound,
                       const struct dw_plan_flight *inbound, const struct dw_plan_hotel *hotel);

/* thread: any. The fit score in 0..1 (2 decimals) of an option that costs cost (see the top
 * of this file); inbound may be NULL. */
double dw_planner_fit(const struct dw_plan_request *req, double cost,
                      const struct dw_plan_flight *outbound, const struct dw_plan_flight *inbound,
                      const struct dw_plan_hotel *hotel);

/* thread: any. Ranks every combination of an outbound flight, an inbound flight (none when
 * nin is 0: one way) and a hotel whose cost is within req->budget, and writes the best (up to
 * DW_PLANNER_MAX_OPTIONS) into best, best first. *cheapest gets the cost of the cheapest
 * combination, within the budget or not (0 when there is none). All arrays are borrowed for
 * the call. Returns the number of options written. */
size_t dw_planner_rank(const struct dw_plan_request *req, const struct dw_plan_flight *out,
                       size_t nout, const struct dw_plan_flight *in, size_t nin,
                       const struct dw_plan_hotel *hotels, size_t nhotels,
                       struct dw_plan_option best[DW_PLANNER_MAX_OPTIONS], double *cheapest);

/* thread: worker (it uses the calling worker's store of db, and may block on it); rcu:
 * registered. Plans the trip that body (len bytes, borrowed) asks for, sending trip_update
 * events through hub as it goes (through inbox first, which numbers and stores them, when it
 * is not NULL). db may be NULL (no database: 503). Returns the HTTP status
 * and, in *resp (*resp_len bytes, NUL-terminated), a new JSON answer the caller frees: 200
 * with the plan or with "status": "failed", 400 {"error", "field"}, 503 when there is no
 * database or it is unavailable, 500 when it refused a statement. */
int dw_planner_plan(struct dw_hub *hub, struct dw_db *db, struct dw_inbox *inbox, const char *body,
                    size_t len, char **resp, size_t *resp_len);

#endif
