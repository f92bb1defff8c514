/*
 * test_planner — the trip planner's pure parts: request validation (each field), dates,
 * cost (rooms = ceil(travelers / 2)), the fit score and the ranking (budget, order, top 5).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

#include "dealwire/planner.h"

#define GOOD                                                                                       \
    "\"user_id\":\"alice\",\"origin\":\"NYC\",\"destination\":\"PAR\","                            \
    "\"depart_date\":\"2030-06-10\",\"budget\":3000,\"travelers\":2"

static const char *field_of(const char *body)
{
    static struct dw_plan_error err;
    struct dw_plan_request req;

    if (dw_planner_parse(body, strlen(body), &req, &err) == 0)
        return NULL;
    return err.field;
}

static void test_parse_valid(void **state)
{
    struct dw_plan_request req;
    struct dw_plan_error err;
    const char *body = "{" GOOD ",\"return_date\":\"2030-06-17\","
                       "\"preferences\":{\"max_stops\":1,\"min_hotel_rating\":4}}";

    (void)state;
    assert_int_equal(dw_planner_parse(body, strlen(body), &req, &err), 0);
    assert_string_equal(req.user_id, "alice");
    assert_int_equal(req.nights, 7);
    assert_int_equal(req.travelers, 2);
    assert_int_equal(req.max_stops, 1);
    assert_true(req.min_rating == 4);
    body = "{" GOOD "}";
    assert_int_equal(dw_planner_parse(body, strlen(body), &req, &err), 0);
    assert_int_equal(req.nights, 1);
    assert_int_equal(req.max_stops, -1);
    assert_string_equal(req.return_date, "");
}

static void test_parse_fields(void **state)
{
    (void)state;
    assert_string_equal(field_of("{\"origin\":\"NYC\"}"), "user_id");
    assert_string_equal(field_of("{" GOOD ",\"user_id\":\"a b\"}"), "user_id");
    assert_string_equal(field_of("{" GOOD ",\"origin\":\"nyc\"}"), "origin");
    assert_string_equal(field_of("{" GOOD ",\"origin\":\"N'C\"}"), "origin");
    assert_string_equal(field_of("{" GOOD ",\"destination\":\"NYC\"}"), "destination");
    assert_string_equal(field_of("{" GOOD ",\"depart_date\":\"2031-02-29\"}"), "depart_date");
    assert_null(field_of("{" GOOD ",\"depart_date\":\"2032-02-29\"}"));
    assert_string_equal(field_of("{" GOOD ",\"return_date\":\"2030-06-09\"}"), "return_date");
    assert_null(field_of("{" GOOD ",\"return_date\":\"2030-06-10\"}"));
    assert_string_equal(field_of("{" GOOD ",\"budget\":0}"), "budget");
    assert_string_equal(field_of("{" GOOD ",\"budget\":\"9\"}"), "budget");
    assert_string_equal(field_of("{" GOOD ",\"travelers\":10}"), "travelers");
    assert_string_equal(field_of("{" GOOD ",\"travelers\":0}"), "travelers");
    assert_null(field_of("{" GOOD ",\"travelers\":9}"));
    assert_string_equal(field_of("{" GOOD ",\"preferences\":{\"max_stops\":1.5}}"),
                        "preferences.max_stops");
    assert_string_equal(field_of("{" GOOD ",\"preferences\":{\"min_hotel_rating\":6}}"),
                        "preferences.min_hotel_rating");
    assert_string_equal(field_of("[1]"), "");
    assert_string_equal(field_of("{"), "");
}

static void test_dates(void **state)
{
    long d;

    (void)state;
    assert_true(dw_planner_parse_date("1970-01-01", &d));
    assert_int_equal(d, 0);
    assert_true(dw_planner_parse_date("2000-03-01", &d));
    assert_int_equal(d, 11017);
    assert_false(dw_planner_parse_date("2000-13-01", &d));
    assert_false(dw_planner_parse_date("2000-1-01", &d));
    assert_false(dw_planner_parse_date("1900-02-29", &d));
    assert_true(dw_planner_parse_date("2000-02-29", &d));
}

static struct dw_plan_request request(double budget, int travelers, int nights)
{
    struct dw_plan_request r;

    memset(&r, 0, sizeof(r));
    r.budget = budget;
    r.travelers = travelers;
    r.nights = nights;
    r.max_stops = -1;
    return r;
}

static void test_cost_and_fit(void **state)
{
    struct dw_plan_request r = request(3000, 3, 7);
    struct dw_plan_flight out = {"o", "A", "", "", 300, 0}, in = {"i", "B", "", "", 200, 1};
    struct dw_plan_hotel h = {"h", "H", 100, 4};

    (void)state;
    /* (300 + 200) × 3 + 100 × 7 × 2 rooms */
    assert_true(dw_planner_cost(&r, &out, &in, &h) == 2900);
    assert_true(dw_planner_cost(&r, &out, NULL, &h) == 2300);
    /* cost 0.4 × (1 - 1500/3000) + stops 0.3 × 1/2 + hotel 0.3 × 4/5 */
    assert_true(dw_planner_fit(&r, 1500, &out, &in, &h) == 0.59);
    r.max_stops = 1;
    r.min_rating = 4;
    assert_true(dw_planner_fit(&r, 1500, &out, &in, &h) == 0.8);
    r.min_rating = 5; /* 0.3 × 0.5 × 4/5 */
    assert_true(dw_planner_fit(&r, 1500, &out, &in, &h) == 0.62);
    h.rating = -1;
    assert_true(dw_planner_fit(&r, 0, &out, NULL, &h) == 0.85);
    assert_true(dw_planner_fit(&r, 3000, &out, NULL, &h) >= 0);
}

static void test_rank(void **state)
{
    struct dw_plan_request r = request(1000, 1, 1);
    struct dw_plan_flight out[] = {
        {"a", "", "", "", 100, 0}, {"b", "", "", "", 50, 0}, {"c", "", "", "", 900, 0}};
    struct dw_plan_flight in[] = {{"x", "", "", "", 100, 0}, {"y", "", "", "", 60, 0}};
    struct dw_plan_hotel hotels[] = {{"h1", "", 100, 5}, {"h2", "", 30, 5}};
    struct dw_plan_option best[DW_PLANNER_MAX_OPTIONS];
    double cheapest;
    size_t n;

    (void)state;
    n = dw_planner_rank(&r, out, 3, in, 2, hotels, 2, best, &cheapest);
    assert_int_equal(n, 5); /* 12 combinations, 4 with "c" over budget */
    assert_true(cheapest == 140);
    assert_int_equal(best[0].outbound, 1);
    assert_int_equal(best[0].inbound, 1);
    assert_int_equal(best[0].hotel, 1);
    for (size_t i = 1; i < n; i++) {
        assert_true(best[i - 1].fit_score >= best[i].fit_score);
        assert_true(best[i].total_cost <= 1000);
        assert_int_not_equal(best[i].outbound, 2);
    }
    r.budget = 100;
    assert_int_equal(dw_planner_rank(&r, out, 3, in, 2, hotels, 2, best, &cheapest), 0);
    assert_true(cheapest == 140);
    n = dw_planner_rank(&r, out, 3, NULL, 0, hotels, 2, best, &cheapest);
    assert_int_equal(n, 1); /* one way: only b + h2 (80) fits */
    assert_int_equal(best[0].inbound, -1);
    assert_int_equal(dw_planner_rank(&r, out, 0, NULL, 0, hotels, 2, best, &cheapest), 0);
    assert_true(cheapest == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid), cmocka_unit_test(test_parse_fields),
        cmocka_unit_test(test_dates),       cmocka_unit_test(test_cost_and_fit),
        cmocka_unit_test(test_rank),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
