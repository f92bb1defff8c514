/*
 * planner — DESIGN: the trip planner (planner.h) runs on a worker, called by http.c's plan job
 * with the request body; the I/O thread only carries the bytes in and the answer out.
 *
 * The one idea: the database does the searching, C does the combining. Three set-based
 * statements (outbound flights on the departure day, inbound flights on the return day,
 * the destination's hotels), each the cheapest DW_PLANNER_SEARCH_LIMIT rows that have seats
 * or rooms for the party, bound by parameters. Ranking the combinations of at most 40 × 40 ×
 * 40 rows is pure arithmetic over borrowed rows (dw_planner_rank), which the unit tests check
 * without a database. The plan, answered or failed, is stored in trip_plans with the request
 * as received.
 *
 * Progress goes to the user's connections with dw_events_trip_update() at 0 / 30 / 60 / 80 /
 * 100 %, or 100 % "failed" with the reason; a user with no connection gets nothing, and the
 * HTTP answer carries the same outcome.
 */
#define DW_LOG_MODULE "planner"
#include "dealwire/planner.h"
#include "dealwire/answer.h"
#include "dealwire/db.h"
#include "dealwire/events.h"
#include "dealwire/inbox.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/metrics.h"
#include "dealwire/proto.h"
#include "dealwire/store.h"
#include "dealwire/time.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#define PARSE_DEPTH 16

/* ------------------------------------------------------------------------------------------
 * Validation (pure)
 * ------------------------------------------------------------------------------------------ */

static int bad(struct dw_plan_error *err, const char *field, const char *message)
{
    err->field = field;
    err->message = message;
    return -EINVAL;
}

bool dw_planner_parse_date(const char *s, long *days)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long y, m, d, era, yoe, doy, doe;

    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    y = strtol(s, NULL, 10);
    m = strtol(s + 5, NULL, 10);
    d = strtol(s + 8, NULL, 10);
    if (y < 1900 || m < 1 || m > 12 || d < 1)
        return false;
    if (d > mdays[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)))
        return false;
    /* Days from civil (H. Hinnant's algorithm), for years >= 0. */
    y -= m <= 2;
    era = y / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *days = era * 146097 + doe - 719468;
    return true;
}

static bool is_city(const char *s)
{
    if (!s || strlen(s) != 3)
        return false;
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return false;
    return true;
}

static bool get_number(struct json_object *v, double *out)
{
    if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double))
        return false;
    *out = json_object_get_double(v);
    return isfinite(*out);
}

static int parse_preferences(struct json_object *obj, struct dw_plan_request *out,
                             struct dw_plan_error *err)
{
    struct json_object *prefs, *v;

    if (!json_object_object_get_ex(obj, "preferences", &prefs) || !prefs)
        return 0;
    if (!json_object_is_type(prefs, json_type_object))
        return bad(err, "preferences", "\"preferences\" must be a JSON object");
    if (json_object_object_get_ex(prefs, "max_stops", &v) && v) {
        int64_t n = json_object_get_int64(v);

        if (!json_object_is_type(v, json_type_int) || n < 0 || n > 10)
            return bad(err, "preferences.max_stops", "max_stops must be an integer 0..10");
        out->max_stops = (int)n;
    }
    if (json_object_object_get_ex(prefs, "min_hotel_rating", &v) && v) {
        if (!get_number(v, &out->min_rating) || out->min_rating < 0 || out->min_rating > 5)
            return bad(err, "preferences.min_hotel_rating",
                       "min_hotel_rating must be a number 0..5");
    }
    return 0;
}

/* Copies the string member name of obj (required) into buf when valid(). */
static int get_string(struct json_object *obj, const char *name, char *buf, size_t size,
                      bool (*valid)(const char *), struct dw_plan_error *err, const char *message)
{
    struct json_object *v;
    const char *s;

    if (!json_object_object_get_ex(obj, name, &v) || !v)
        return bad(err, name, "required field missing");
    s = dw_proto_json_string(v);
    if (!s || strlen(s) >= size || !valid(s))
        return bad(err, name, message);
    memcpy(buf, s, strlen(s) + 1);
    return 0;
}

static bool is_date(const char *s)
{
    long days;

    return dw_planner_parse_date(s, &days);
}

static int parse_object(struct json_object *obj, struct dw_plan_request *out,
                        struct dw_plan_error *err)
{
    struct json_object *v;
    long depart = 0, ret = 0; /* set by dw_planner_parse_date (is_date checked the text) */
    int r;

    if (!json_object_is_type(obj, json_type_object))
        return bad(err, "", "the body must be a JSON object");
    if ((r = get_string(obj, "user_id", out->user_id, sizeof(out->user_id),
                        dw_proto_user_id_is_valid, err,
                        "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")) < 0 ||
        (r = get_string(obj, "origin", out->origin, sizeof(out->origin), is_city, err,
                        "origin must be a city code of three capital letters")) < 0 ||
        (r = get_string(obj, "destination", out->destination, sizeof(out->destination), is_city,
                        err, "destination must be a city code of three capital letters")) < 0 ||
        (r = get_string(obj, "depart_date", out->depart_date, sizeof(out->depart_date), is_date,
                        err, "depart_date must be a date YYYY-MM-DD")) < 0)
        return r;
    if (strcmp(out->origin, out->destination) == 0)
        return bad(err, "destination", "destination must differ from origin");
    dw_planner_parse_date(out->depart_date, &depart);
    out->nights = 1;
    if (json_object_object_get_ex(obj, "return_date", &v) && v) {
        if ((r = get_string(obj, "return_date", out->return_date, sizeof(out->return_date), is_date,
                            err, "return_date must be a date YYYY-MM-DD")) < 0)
            return r;
        dw_planner_parse_date(out->return_date, &ret);
        if (ret < depart)
            return bad(err, "return_date", "return_date must not be before depart_date");
        if (ret > depart)
            out->nights = (int)(ret - depart);
        if (out->nights > 365)
            return bad(err, "return_date", "a trip may last at most 365 nights");
    }
    if (!json_object_object_get_ex(obj, "budget", &v) || !v)
        return bad(err, "budget", "required field missing");
    if (!get_number(v, &out->budget) || out->budget <= 0)
        return bad(err, "budget", "budget must be a number greater than 0");
    if (!json_object_object_get_ex(obj, "travelers", &v) || !v)
        return bad(err, "travelers", "required field missing");
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1 ||
        json_object_get_int64(v) > DW_PLANNER_MAX_TRAVELERS)
        return bad(err, "travelers", "travelers must be an integer 1..9");
    out->travelers = (int)json_object_get_int64(v);
    return parse_preferences(obj, out, err);
}

int dw_planner_parse(const char *body, size_t len, struct dw_plan_request *out,
                     struct dw_plan_error *err)
{
    struct json_object *obj;
    int r;

    memset(out, 0, sizeof(*out));
    out->max_stops = -1;
    if (dw_proto_parse_json(body, len, PARSE_DEPTH, &obj) < 0)
        return bad(err, "", "the body is not valid JSON");
    r = parse_object(obj, out, err);
    json_object_put(obj);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * Cost, fit and ranking (pure)
 * ------------------------------------------------------------------------------------------ */

static int rooms(const struct dw_plan_request *req)
{
    return (req->travelers + 1) / 2;
}

double dw_planner_cost(const struct dw_plan_request *req, const struct dw_plan_flight *outbound,
                       const struct dw_plan_flight *inbound, const struct dw_plan_hotel *hotel)
{
    double flights = outbound->price + (inbound ? inbound->price : 0);

    return flights * req->travelers + hotel->price_per_night * req->nights * rooms(req);
}

static int stops_over(const struct dw_plan_request *req, const struct dw_plan_flight *f)
{
    int pref = req->max_stops < 0 ? 0 : req->max_stops;

    return f && f->stops > pref ? f->stops - pref : 0;
}

double dw_planner_fit(const struct dw_plan_request *req, double cost,
                      const struct dw_plan_flight *outbound, const struct dw_plan_flight *inbound,
                      const struct dw_plan_hotel *hotel)
{
    double cost_fit = 1 - cost / req->budget;
    double stops_fit = 1.0 / (1 + stops_over(req, outbound) + stops_over(req, inbound));
    double hotel_fit;

    if (cost_fit < 0)
        cost_fit = 0;
    if (cost_fit > 1)
        cost_fit = 1;
    if (hotel->rating < 0)
        hotel_fit = 0.5;
    else if (req->min_rating > 0)
        hotel_fit = hotel->rating >= req->min_rating ? 1 : 0.5 * hotel->rating / req->min_rating;
    else
        hotel_fit = hotel->rating / 5;
    return dw_events_round(0.4 * cost_fit + 0.3 * stops_fit + 0.3 * hotel_fit, 100);
}

static bool better(const struct dw_plan_option *a, const struct dw_plan_option *b)
{
    if (a->fit_score != b->fit_score)
        return a->fit_score > b->fit_score;
    return a->total_cost < b->total_cost;
}

/* Inserts o into best (n kept so far, best first) when it belongs; returns the new count. */
static size_t keep(struct dw_plan_option *best, size_t n, const struct dw_plan_option *o)
{
    size_t i;

    if (n == DW_PLANNER_MAX_OPTIONS && !better(o, &best[n - 1]))
        return n;
    if (n < DW_PLANNER_MAX_OPTIONS)
        n++;
    for (i = n - 1; i > 0 && better(o, &best[i - 1]); i--)
        best[i] = best[i - 1];
    best[i] = *o;
    return n;
}

size_t dw_planner_rank(const struct dw_plan_request *req, const struct dw_plan_flight *out,
                       size_t nout, const struct dw_plan_flight *in, size_t nin,
                       const struct dw_plan_hotel *hotels, size_t nhotels,
                       struct dw_plan_option best[DW_PLANNER_MAX_OPTIONS], double *cheapest)
{
    size_t n = 0, nback = nin ? nin : 1;
    bool any = false;

    *cheapest = 0;
    for (size_t o = 0; o < nout; o++)
        for (size_t b = 0; b < nback; b++)
            for (size_t h = 0; h < nhotels; h++) {
                const struct dw_plan_flight *back = nin ? &in[b] : NULL;
                struct dw_plan_option opt = {(int)o, nin ? (int)b : -1, (int)h, 0, 0};

                opt.total_cost = dw_planner_cost(req, &out[o], back, &hotels[h]);
                if (!any || opt.total_cost < *cheapest)
                    *cheapest = opt.total_cost;
                any = true;
                if (opt.total_cost > req->budget)
                    continue;
                opt.fit_score = dw_planner_fit(req, opt.total_cost, &out[o], back, &hotels[h]);
                n = keep(best, n, &opt);
            }
    return n;
}

/* ------------------------------------------------------------------------------------------
 * Search (worker, database)
 * ------------------------------------------------------------------------------------------ */

/* $1 origin, $2 destination, $3 day, $4 seats needed, $5 limit. The day is the session's time
 * zone's, like the demo data's. */
static const char flights_sql[] =
    "SELECT id, airline, to_json(depart_at) #>> '{}', to_json(arrive_at) #>> '{}', price, stops"
    " FROM flights"
    " WHERE origin = $1 AND destination = $2"
    "  AND depart_at >= $3::date AND depart_at < $3::date + 1"
    "  AND seats_left >= $4::integer"
    " ORDER BY price, stops, depart_at, id LIMIT $5::integer";

/* $1 city, $2 rooms needed, $3 preferred minimum rating, $4 limit. The hotels that meet the
 * preference come first, cheapest first, so a cheap city does not crowd them out. */
static const char hotels_sql[] =
    "SELECT id, name, price_per_night, coalesce(rating, -1)"
    " FROM hotels"
    " WHERE city = $1 AND rooms_left >= $2::integer"
    " ORDER BY coalesce(rating >= $3::numeric, false) DESC, price_per_night, id"
    " LIMIT $4::integer";

/* $1 user, $2 request, $3 result, $4 total cost, $5 fit score. */
static const char store_sql[] =
    "INSERT INTO trip_plans (user_id, request, result, total_cost, fit_score)"
    " VALUES ($1, $2::jsonb, $3::jsonb, $4::numeric, $5::numeric) RETURNING id";

struct search {
    PGresult *out_res, *in_res, *hotel_res;
    struct dw_plan_flight *out, *in;
    struct dw_plan_hotel *hotels;
    size_t nout, nin, nhotels;
};

static void search_free(struct search *s)
{
    PQclear(s->out_res);
    PQclear(s->in_res);
    PQclear(s->hotel_res);
    free(s->out);
    free(s->in);
    free(s->hotels);
}

static int find_flights(struct dw_store *st, const struct dw_plan_request *req, const char *from,
                        const char *to, const char *day, PGresult **res,
                        struct dw_plan_flight **rows, size_t *n)
{
    char seats[16], limit[16];
    const char *params[5] = {from, to, day, seats, limit};
    long long stops;
    int r, count;

    snprintf(seats, sizeof(seats), "%d", req->travelers);
    snprintf(limit, sizeof(limit), "%d", DW_PLANNER_SEARCH_LIMIT);
    r = dw_store_exec(st, res, flights_sql, 5, params);
    if (r < 0)
        return r;
    if (PQnfields(*res) != 6)
        return -EIO;
    count = PQntuples(*res);
    *rows = dw_xcalloc((size_t)count + 1, sizeof(**rows));
    for (int i = 0; i < count; i++) {
        struct dw_plan_flight *f = &(*rows)[i];

        f->id = PQgetvalue(*res, i, 0);
        f->airline = PQgetvalue(*res, i, 1);
        f->depart_at = PQgetvalue(*res, i, 2);
        f->arrive_at = PQgetvalue(*res, i, 3);
        if (dw_store_parse_double(PQgetvalue(*res, i, 4), &f->price) < 0 ||
            dw_store_parse_int(PQgetvalue(*res, i, 5), 0, INT_MAX, &stops) < 0)
            return -EIO;
        f->stops = (int)stops;
    }
    *n = (size_t)count;
    return 0;
}

static int find_hotels(struct dw_store *st, const struct dw_plan_request *req, struct search *s)
{
    char nrooms[16], rating[32], limit[16];
    const char *params[4] = {req->destination, nrooms, rating, limit};
    int r, count;

    snprintf(nrooms, sizeof(nrooms), "%d", rooms(req));
    snprintf(rating, sizeof(rating), "%.2f", req->min_rating);
    snprintf(limit, sizeof(limit), "%d", DW_PLANNER_SEARCH_LIMIT);
    r = dw_store_exec(st, &s->hotel_res, hotels_sql, 4, params);
    if (r < 0)
        return r;
    if (PQnfields(s->hotel_res) != 4)
        return -EIO;
    count = PQntuples(s->hotel_res);
    s->hotels = dw_xcalloc((size_t)count + 1, sizeof(*s->hotels));
    for (int i = 0; i < count; i++) {
        s->hotels[i].id = PQgetvalue(s->hotel_res, i, 0);
        s->hotels[i].name = PQgetvalue(s->hotel_res, i, 1);
        if (dw_store_parse_double(PQgetvalue(s->hotel_res, i, 2), &s->hotels[i].price_per_night) <
                0 ||
            dw_store_parse_double(PQgetvalue(s->hotel_res, i, 3), &s->hotels[i].rating) < 0)
            return -EIO;
    }
    s->nhotels = (size_t)count;
    return 0;
}

static int search(struct dw_store *st, const struct dw_plan_request *req, struct search *s)
{
    int r = find_flights(st, req, req->origin, req->destination, req->depart_date, &s->out_res,
                         &s->out, &s->nout);

    if (r == 0 && req->return_date[0])
        r = find_flights(st, req, req->destination, req->origin, req->return_date, &s->in_res,
                         &s->in, &s->nin);
    if (r == 0)
        r = find_hotels(st, req, s);
    return r;
}

/* ------------------------------------------------------------------------------------------
 * The answer
 * ------------------------------------------------------------------------------------------ */

static struct json_object *money(double v)
{
    return dw_events_new_number(dw_events_round(v, 100));
}

static struct json_object *flight_json(const struct dw_plan_flight *f, const char *from,
                                       const char *to)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(f->id));
    json_object_object_add(o, "airline", json_object_new_string(f->airline));
    json_object_object_add(o, "origin", json_object_new_string(from));
    json_object_object_add(o, "destination", json_object_new_string(to));
    json_object_object_add(o, "depart_at", json_object_new_string(f->depart_at));
    json_object_object_add(o, "arrive_at", json_object_new_string(f->arrive_at));
    json_object_object_add(o, "price", money(f->price));
    json_object_object_add(o, "stops", json_object_new_int(f->stops));
    return o;
}

static struct json_object *option_json(const struct dw_plan_request *req, const struct search *s,
                                       const struct dw_plan_option *opt)
{
    struct json_object *o = json_object_new_object(), *flights = json_object_new_array();
    struct json_object *hotel = json_object_new_object();
    const struct dw_plan_hotel *h = &s->hotels[opt->hotel];

    json_object_array_add(flights,
                          flight_json(&s->out[opt->outbound], req->origin, req->destination));
    if (opt->inbound >= 0)
        json_object_array_add(flights,
                              flight_json(&s->in[opt->inbound], req->destination, req->origin));
    json_object_object_add(hotel, "id", json_object_new_string(h->id));
    json_object_object_add(hotel, "name", json_object_new_string(h->name));
    json_object_object_add(hotel, "city", json_object_new_string(req->destination));
    json_object_object_add(hotel, "price_per_night", money(h->price_per_night));
    json_object_object_add(hotel, "rating", h->rating < 0 ? NULL : dw_events_new_number(h->rating));
    json_object_object_add(hotel, "nights", json_object_new_int(req->nights));
    json_object_object_add(hotel, "rooms", json_object_new_int(rooms(req)));
    json_object_object_add(o, "flights", flights);
    json_object_object_add(o, "hotel", hotel);
    json_object_object_add(o, "total_cost", money(opt->total_cost));
    json_object_object_add(o, "fit_score", dw_events_new_number(opt->fit_score));
    return o;
}

static const char *stops_text(int stops)
{
    return stops == 0 ? "nonstop" : stops == 1 ? "1 stop" : "2+ stops";
}

/* The plain-language sentence about the best option. */
static char *explain(const struct dw_plan_request *req, const struct search *s,
                     const struct dw_plan_option *best, size_t n)
{
    const struct dw_plan_flight *out = &s->out[best->outbound];
    const struct dw_plan_hotel *h = &s->hotels[best->hotel];
    char back[160] = "", rating[32] = "";
    char *text;

    if (best->inbound >= 0)
        snprintf(back, sizeof(back), ", back with %s (%s)", s->in[best->inbound].airline,
                 stops_text(s->in[best->inbound].stops));
    if (h->rating >= 0)
        snprintf(rating, sizeof(rating), ", rated %.1f", h->rating);
    if (asprintf(&text,
                 "Out of %zu option%s within your $%.2f budget for %d traveler%s from %s to %s, "
                 "the best costs $%.2f (%.0f%% of the budget): %s (%s) out%s, and %d night%s at "
                 "%s%s; fit score %.2f.",
                 n, n == 1 ? "" : "s", req->budget, req->travelers, req->travelers == 1 ? "" : "s",
                 req->origin, req->destination, best->total_cost,
                 best->total_cost / req->budget * 100, out->airline, stops_text(out->stops), back,
                 req->nights, req->nights == 1 ? "" : "s", h->name, rating, best->fit_score) < 0)
        return NULL;
    return text;
}

static int answer(int status, struct json_object *obj, char **resp, size_t *resp_len)
{
    *resp = dw_answer_json(obj, resp_len);
    return status;
}

static int answer_error(int status, const char *message, const char *field, char **resp,
                        size_t *resp_len)
{
    *resp = dw_answer_error(message, field, resp_len);
    return status;
}

/* ------------------------------------------------------------------------------------------
 * The plan
 * ------------------------------------------------------------------------------------------ */

struct plan {
    struct dw_hub *hub;
    struct dw_inbox *inbox; /* NULL: trip updates go straight to the hub */
    struct dw_store *st;
    const struct dw_plan_request *req;
    const char *body; /* the request as received */
    size_t body_len;
};

static void progress(const struct plan *p, const char *status, const char *message, int pct,
                     struct json_object *extra)
{
    struct json_object *obj;

    if (!p->inbox) {
        dw_events_trip_update(p->hub, p->req->user_id, status, message, pct, extra);
        json_object_put(extra);
        return;
    }
    /* Critical: numbered and stored by the inbox's thread, then sent, in the order given. */
    obj = dw_events_trip_update_new(p->req->user_id, status, message, pct, extra);
    if (obj && dw_inbox_send(p->inbox, p->req->user_id, DW_MSG_TRIP_UPDATE, obj) < 0)
        dw_log(DW_LOG_DEBUG, "trip update not sent: the inbox is stopping");
    json_object_put(obj);
    json_object_put(extra);
}

/* Stores the plan; *id gets its id. Returns 0, -EAGAIN or -EIO. */
static int store_plan(const struct plan *p, struct json_object *result, const double *cost,
                      const double *fit, char *id, size_t id_size)
{
    char *request = dw_xstrndup(p->body, p->body_len);
    char cost_s[32], fit_s[32];
    const char *params[5] = {p->req->user_id, request, NULL, cost ? cost_s : NULL,
                             fit ? fit_s : NULL};
    PGresult *res;
    int r;

    params[2] = json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN);
    if (cost)
        snprintf(cost_s, sizeof(cost_s), "%.2f", *cost);
    if (fit)
        snprintf(fit_s, sizeof(fit_s), "%.2f", *fit);
    r = dw_store_exec(p->st, &res, store_sql, 5, params);
    free(request);
    if (r < 0)
        return r;
    snprintf(id, id_size, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return 0;
}

static int fail_db(const struct plan *p, int r, char **resp, size_t *resp_len)
{
    if (r == -EAGAIN) {
        progress(p, "failed", "The database is not available, please try again later.", 100, NULL);
        return answer_error(503, "database unavailable", NULL, resp, resp_len);
    }
    dw_log(DW_LOG_ERROR, "trip plan for %s: %s", p->req->user_id, dw_store_error(p->st));
    progress(p, "failed", "The trip could not be planned.", 100, NULL);
    return answer_error(500, "database error", NULL, resp, resp_len);
}

/* Nothing fits: stores the failed plan, sends the failed update, answers 200 "failed". */
static int fail_plan(const struct plan *p, const char *reason, char **resp, size_t *resp_len)
{
    struct json_object *result = json_object_new_object(), *obj, *extra;
    char id[32];
    int r;

    json_object_object_add(result, "status", json_object_new_string("failed"));
    json_object_object_add(result, "reason", json_object_new_string(reason));
    r = store_plan(p, result, NULL, NULL, id, sizeof(id));
    json_object_put(result);
    if (r < 0)
        return fail_db(p, r, resp, resp_len);
    extra = json_object_new_object();
    json_object_object_add(extra, "plan_id", json_object_new_string(id));
    json_object_object_add(extra, "reason", json_object_new_string(reason));
    progress(p, "failed", reason, 100, extra);
    obj = json_object_new_object();
    json_object_object_add(obj, "plan_id", json_object_new_string(id));
    json_object_object_add(obj, "status", json_object_new_string("failed"));
    json_object_object_add(obj, "reason", json_object_new_string(reason));
    return answer(200, obj, resp, resp_len);
}

static int plan_found(const struct plan *p, const struct search *s,
                      const struct dw_plan_option *best, size_t n, char **resp, size_t *resp_len)
{
    struct json_object *options = json_object_new_array(), *result, *obj, *extra;
    char message[64], id[32], *text;
    int r;

    snprintf(message, sizeof(message), "Found %zu trip option%s!", n, n == 1 ? "" : "s");
    extra = json_object_new_object();
    json_object_object_add(extra, "count", json_object_new_int((int)n));
    progress(p, "results_found", message, 60, extra);
    progress(p, "generating_explanation", "Creating personalized recommendation...", 80, NULL);

    for (size_t i = 0; i < n; i++)
        json_object_array_add(options, option_json(p->req, s, &best[i]));
    text = explain(p->req, s, &best[0], n);
    result = json_object_new_object();
    json_object_object_add(result, "options", options);
    json_object_object_add(result, "explanation", json_object_new_string(text ? text : ""));
    free(text);
    r = store_plan(p, result, &best[0].total_cost, &best[0].fit_score, id, sizeof(id));
    if (r < 0) {
        json_object_put(result);
        return fail_db(p, r, resp, resp_len);
    }

    extra = json_object_new_object();
    json_object_object_add(extra, "plan_id", json_object_new_string(id));
    json_object_object_add(extra, "total_cost", money(best[0].total_cost));
    json_object_object_add(extra, "fit_score", dw_events_new_number(best[0].fit_score));
    progress(p, "completed", "Trip plan ready!", 100, extra);

    obj = json_object_new_object();
    json_object_object_add(obj, "plan_id", json_object_new_string(id));
    json_object_object_add(obj, "status", json_object_new_string("completed"));
    json_object_object_add(obj, "total_cost", money(best[0].total_cost));
    json_object_object_add(obj, "fit_score", dw_events_new_number(best[0].fit_score));
    json_object_object_add(obj, "options", json_object_get(options));
    json_object_object_add(obj, "explanation",
                           json_object_get(json_object_object_get(result, "explanation")));
    json_object_put(result);
    return answer(200, obj, resp, resp_len);
}

/* dw_planner_plan; *found says whether an option fit (both answers are 200). */
static int plan(struct dw_hub *hub, struct dw_db *db, struct dw_inbox *inbox, const char *body,
                size_t len, char **resp, size_t *resp_len, bool *found)
{
    struct dw_plan_request req;
    struct dw_plan_error err;
    struct dw_plan_option best[DW_PLANNER_MAX_OPTIONS];
    struct search s = {0};
    struct plan p = {hub, inbox, NULL, &req, body, len};
    char reason[192];
    double cheapest;
    size_t n;
    int r, status;

    if (dw_planner_parse(body, len, &req, &err) < 0)
        return answer_error(400, err.message, err.field, resp, resp_len);
    if (!db)
        return answer_error(503, "no database", NULL, resp, resp_len);
    p.st = dw_db_store(db);

    progress(&p, "started", "Searching for the best trip options...", 0, NULL);
    progress(&p, "searching", "Analyzing flights and hotels...", 30, NULL);
    r = search(p.st, &req, &s);
    if (r < 0) {
        search_free(&s);
        return fail_db(&p, r, resp, resp_len);
    }
    n = dw_planner_rank(&req, s.out, s.nout, s.in, s.nin, s.hotels, s.nhotels, best, &cheapest);
    if (s.nout == 0)
        snprintf(reason, sizeof(reason), "No flights from %s to %s on %s.", req.origin,
                 req.destination, req.depart_date);
    else if (req.return_date[0] && s.nin == 0)
        snprintf(reason, sizeof(reason), "No return flights from %s to %s on %s.", req.destination,
                 req.origin, req.return_date);
    else if (s.nhotels == 0)
        snprintf(reason, sizeof(reason), "No hotels available in %s.", req.destination);
    else if (n == 0)
        snprintf(reason, sizeof(reason),
                 "No trip fits the budget of $%.2f: the cheapest option costs $%.2f.", req.budget,
                 cheapest);
    *found = n > 0;
    if (n == 0)
        status = fail_plan(&p, reason, resp, resp_len);
    else
        status = plan_found(&p, &s, best, n, resp, resp_len);
    search_free(&s);
    return status;
}

/* The plan, timed and counted for /metrics by its outcome: an option found, none fitting (both
 * 200), an invalid request (400), or no database / a database error (503, 500). */
int dw_planner_plan(struct dw_hub *hub, struct dw_db *db, struct dw_inbox *inbox, const char *body,
                    size_t len, char **resp, size_t *resp_len)
{
    int64_t t0 = dw_now_mono_ns();
    bool found = false;
    int status = plan(hub, db, inbox, body, len, resp, resp_len, &found);
    enum dw_metrics_plan outcome = status == 400   ? DW_METRICS_PLAN_INVALID
                                   : status != 200 ? DW_METRICS_PLAN_FAILED
                                   : found         ? DW_METRICS_PLAN_FOUND
                                                   : DW_METRICS_PLAN_NOT_FOUND;

    dw_metrics_plan(outcome, dw_now_mono_ns() - t0);
    return status;
}
