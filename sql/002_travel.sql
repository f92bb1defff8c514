-- 002_travel: what the trip planner searches (flights, hotels) and the plans it stores.
--
-- Cities are codes (IATA metropolitan area codes such as 'NYC', 'PAR'): flights.origin,
-- flights.destination and hotels.city use the same code, so a plan joins them directly.

CREATE TABLE flights (
    id          text PRIMARY KEY,
    origin      text NOT NULL,
    destination text NOT NULL CHECK (destination <> origin),
    depart_at   timestamptz NOT NULL,
    arrive_at   timestamptz NOT NULL CHECK (arrive_at > depart_at),
    price       numeric(12, 2) NOT NULL CHECK (price >= 0),
    airline     text NOT NULL,
    stops       integer NOT NULL DEFAULT 0 CHECK (stops >= 0),
    seats_left  integer NOT NULL DEFAULT 0 CHECK (seats_left >= 0)
);

-- The planner asks for one route in a departure window.
CREATE INDEX flights_route_idx ON flights (origin, destination, depart_at);

CREATE TABLE hotels (
    id              text PRIMARY KEY,
    city            text NOT NULL,
    name            text NOT NULL,
    price_per_night numeric(12, 2) NOT NULL CHECK (price_per_night >= 0),
    rating          numeric(2, 1) CHECK (rating BETWEEN 0 AND 5),
    rooms_left      integer NOT NULL DEFAULT 0 CHECK (rooms_left >= 0)
);

-- The planner asks for a city's hotels, cheapest first.
CREATE INDEX hotels_city_idx ON hotels (city, price_per_night);

CREATE TABLE trip_plans (
    id         bigserial PRIMARY KEY,
    user_id    text NOT NULL,
    request    jsonb NOT NULL,                 -- the POST /api/ai/trip/plan body, as received
    result     jsonb,                          -- options and explanation, as answered
    total_cost numeric(12, 2),
    fit_score  numeric(5, 2),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX trip_plans_user_idx ON trip_plans (user_id, created_at);
