"""Write N synthetic, BFCL-shaped function-call items as JSONL, seeded, for timing checkers on the same calls.

Plain Python (no bfcl or project import); runs in any Python >= 3.7. Each line:

    {"id": "simple_17", "category": "simple" | "parallel" | "multiple",
     "function": [BFCL function docs], "model_output": [{"func": {"param": value}}],
     "possible_answer": [{"func": {"param": [acceptable values]}}], "mutation": null | "<kind>"}

Function docs use BFCL's own spelling ({"type": "dict", "properties": ..., "required": [...]}, types
"string"/"integer"/"float"/"boolean"/"array"/"dict"). Possible answers follow BFCL's ground-truth
convention: every parameter the model may pass is listed, and "" in a list means "may be omitted".

About 80% of items are correct (mutation null). The rest carry one injected fault, named in "mutation":
wrong_type, missing_required, unknown_value, unexpected_param, and per category wrong_function
(multiple: the model picks a distractor tool) or wrong_count (parallel: one call dropped).

Usage: python benchmarks/bfcl_env/make_calls.py [--n 10000] [--seed 0] [--error-rate 0.2]
           [--mix simple=0.4,parallel=0.3,multiple=0.3] [--out calls.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys

# ---------------------------------------------------------------------------------------------
# Value pools. Each free-text entry lists the surface forms a grader should accept for one value.

CITIES = [
    ["San Francisco, CA", "San Francisco"], ["New York, NY", "New York", "NYC"], ["London, UK", "London"],
    ["Paris, France", "Paris"], ["Tokyo, Japan", "Tokyo"], ["Berlin, Germany", "Berlin"],
    ["Chicago, IL", "Chicago"], ["Austin, TX", "Austin"], ["Toronto, Canada", "Toronto"],
    ["Sydney, Australia", "Sydney"], ["Madrid, Spain", "Madrid"], ["Seattle, WA", "Seattle"],
    ["Boston, MA", "Boston"], ["Mumbai, India", "Mumbai"], ["Singapore"], ["Rome, Italy", "Rome"],
]
AIRPORTS = ["SFO", "JFK", "LHR", "CDG", "HND", "BER", "ORD", "AUS", "YYZ", "SYD", "MAD", "SEA", "BOS", "BOM"]
DATES = ["2024-03-14", "2024-05-02", "2024-06-21", "2024-07-04", "2024-08-30", "2024-10-11", "2024-11-28",
         "2024-12-24", "2025-01-15", "2025-02-09"]
TIMES = ["2024-05-02T09:00", "2024-05-02T14:30", "2024-06-10T11:15", "2024-07-01T16:00", "2024-09-05T08:45"]
EMAILS = ["alice@example.com", "bob@example.org", "carol@corp.example", "dan@example.net", "erin@example.com",
          "frank@corp.example", "grace@example.org"]
SUBJECTS = [["Quarterly report", "Q3 report"], ["Lunch on Friday?"], ["Meeting notes"], ["Invoice #4821"],
            ["Project kickoff"], ["Travel itinerary"]]
BODIES = ["Please find the numbers attached.", "Are you free around noon?", "Notes from today are below.",
          "The invoice is due at the end of the month.", "Looking forward to working together."]
TITLES = [["Team standup"], ["Dentist appointment", "Dentist"], ["Sprint planning"], ["1:1 with manager"],
          ["Yoga class", "Yoga"]]
SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "IBM"]
TEXTS = ["Where is the train station?", "I would like a coffee, please.", "The meeting is postponed.",
         "Thank you for your help.", "How much does this cost?"]
CUISINES = ["italian", "japanese", "mexican", "thai", "indian", "french", "vegan", "korean"]
AMENITIES = ["wifi", "pool", "parking", "gym", "breakfast", "spa", "pet friendly"]
SONGS = [["Bohemian Rhapsody", "Bohemian Rhapsody by Queen"], ["Clair de Lune"], ["lofi beats", "lo-fi beats"],
         ["Taylor Swift"], ["jazz for studying"], ["Hotel California"]]
MOVIES = [["Dune: Part Two", "Dune Part Two", "Dune 2"], ["Oppenheimer"], ["Inside Out 2"], ["The Batman"],
          ["Barbie"]]
TAGS = ["morning", "outdoor", "interval", "recovery", "long", "race prep", "with friends"]
NAMES = ["Alice Smith", "Bob Jones", "Carol White", "Dan Brown", "Erin Green"]
PHONES = ["+1-415-555-0100", "+44-20-7946-0000", "+81-3-5555-0199", "+1-212-555-0142"]
SKUS = ["SKU-1001", "SKU-2040", "SKU-3307", "SKU-4410", "SKU-5123", "SKU-6002"]
COLUMNS = ["status", "country", "plan", "created_at", "owner"]
COLUMN_VALUES = {"status": ["active", "inactive", "pending"], "country": ["US", "DE", "JP", "FR"],
                 "plan": ["free", "pro", "enterprise"], "created_at": ["2024-01-01", "2024-06-01"],
                 "owner": ["alice", "bob", "carol"]}

_STANDARDIZE = re.compile(r"[ \,\.\/\-\_\*\^]")


def standardize(value: object) -> object:
    """BFCL's string comparison key (spaces and ,./-_*^ dropped, lowercased); used only to keep faults real."""
    if isinstance(value, str):
        return _STANDARDIZE.sub("", value).lower().replace("'", '"')
    if isinstance(value, list):
        return [standardize(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Parameter kinds. sample(rng) -> list of acceptable values (first is canonical); bad(rng, value)
# -> a value of the right type that no grader should accept.


class Param:
    def __init__(self, name, schema, required=True, default=None, has_default=False):
        self.name, self.schema, self.required = name, schema, required
        self.default, self.has_default = default, has_default

    @property
    def type(self):
        return self.schema["type"]

    def sample(self, rng):
        raise NotImplementedError

    def pick(self, rng, possible):
        """A value the model passes that the possible answers accept."""
        return rng.choice(possible)

    def bad(self, rng, value):
        raise NotImplementedError


class Enum(Param):
    def __init__(self, name, desc, values, bad_values, **kw):
        super().__init__(name, {"type": "string", "description": desc, "enum": list(values)}, **kw)
        self.values, self.bad_values = values, bad_values
        if kw.get("has_default"):
            self.schema["default"] = kw["default"]

    def sample(self, rng):
        return [rng.choice(self.values)]

    def bad(self, rng, value):
        return rng.choice(self.bad_values)


class Text(Param):
    def __init__(self, name, desc, pool, **kw):
        super().__init__(name, {"type": "string", "description": desc}, **kw)
        self.pool = [p if isinstance(p, list) else [p] for p in pool]

    def sample(self, rng):
        return list(rng.choice(self.pool))

    def bad(self, rng, value):
        key = standardize(value)
        others = [p for p in self.pool if key not in [standardize(f) for f in p]]
        return rng.choice(rng.choice(others))


class Int(Param):
    def __init__(self, name, desc, lo, hi, **kw):
        super().__init__(name, {"type": "integer", "description": desc}, **kw)
        self.lo, self.hi = lo, hi
        if kw.get("has_default"):
            self.schema["default"] = kw["default"]

    def sample(self, rng):
        return [rng.randint(self.lo, self.hi)]

    def bad(self, rng, value):
        return value + rng.choice([-1, 1]) * rng.randint(1, max(1, (self.hi - self.lo) // 2))


class Float(Param):
    def __init__(self, name, desc, lo, hi, digits=2, **kw):
        super().__init__(name, {"type": "float", "description": desc}, **kw)
        self.lo, self.hi, self.digits = lo, hi, digits
        if kw.get("has_default"):
            self.schema["default"] = kw["default"]

    def sample(self, rng):
        while True:  # keep floats non-integral: BFCL accepts an int for a float, other graders may not
            v = round(rng.uniform(self.lo, self.hi), self.digits)
            if v != int(v):
                return [v]

    def bad(self, rng, value):
        return round(value * rng.uniform(1.15, 1.9) + 0.01, self.digits)


class Bool(Param):
    def __init__(self, name, desc, **kw):
        super().__init__(name, {"type": "boolean", "description": desc}, **kw)
        if kw.get("has_default"):
            self.schema["default"] = kw["default"]

    def sample(self, rng):
        return [rng.random() < 0.5]

    def bad(self, rng, value):
        return not value


class StrList(Param):
    def __init__(self, name, desc, pool, lo=1, hi=3, enum=False, **kw):
        items = {"type": "string"}
        if enum:
            items["enum"] = list(pool)
        super().__init__(name, {"type": "array", "description": desc, "items": items}, **kw)
        self.pool, self.lo, self.hi = pool, lo, hi

    def sample(self, rng):
        return [rng.sample(self.pool, rng.randint(self.lo, self.hi))]

    def bad(self, rng, value):
        extra = [p for p in self.pool if p not in value]
        if len(value) > 1 and (not extra or rng.random() < 0.5):
            return value[:-1]
        return value + [rng.choice(extra)]


class Dict(Param):
    """A "dict" parameter; fields: {key: (schema type, pool)}; sample_keys(rng) picks which keys are set."""

    def __init__(self, name, desc, fields, required_keys, sample_keys, **kw):
        props = {k: {"type": t, "description": k.replace("_", " ")} for k, (t, _) in fields.items()}
        schema = {"type": "dict", "description": desc, "properties": props, "required": list(required_keys)}
        super().__init__(name, schema, **kw)
        self.fields, self.sample_keys = fields, sample_keys

    def sample(self, rng):  # BFCL's dict ground truth: {key: [acceptable values]}
        return [{k: [rng.choice(self.fields[k][1])] for k in self.sample_keys(rng)}]

    def pick(self, rng, possible):
        return {k: rng.choice(v) for k, v in possible[0].items()}

    def bad(self, rng, value):
        key = rng.choice(sorted(value))
        others = [v for v in self.fields[key][1] if standardize(v) != standardize(value[key])]
        return {**value, key: rng.choice(others)}


class DictList(Param):
    """An "array" of "dict" items (BFCL checks these with its list_dict_checker)."""

    def __init__(self, name, desc, item_fields, **kw):
        props = {k: {"type": t} for k, (t, _) in item_fields.items()}
        schema = {"type": "array", "description": desc,
                  "items": {"type": "dict", "properties": props, "required": list(item_fields)}}
        super().__init__(name, schema, **kw)
        self.item_fields = item_fields

    def sample(self, rng):
        skus = rng.sample(SKUS, rng.randint(1, 3))
        return [[{"sku": [s], "quantity": [rng.randint(1, 5)]} for s in skus]]

    def pick(self, rng, possible):
        return [{k: rng.choice(v) for k, v in d.items()} for d in possible[0]]

    def bad(self, rng, value):
        i = rng.randrange(len(value))
        out = [dict(d) for d in value]
        out[i]["quantity"] += rng.randint(1, 4)
        return out


def opt(cls, *args, default=None, has_default=False, **kw):
    return cls(*args, required=False, default=default, has_default=has_default, **kw)


# ---------------------------------------------------------------------------------------------
# 20 function templates.

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "INR"]
LANGS = ["en", "es", "fr", "de", "ja", "it", "pt", "zh"]

TEMPLATES = [
    ("get_weather_forecast", "Get the weather forecast for a location for the next few days.", [
        Text("location", "The city and state or country, e.g. San Francisco, CA.", CITIES),
        Int("days", "Number of days to forecast, 1 to 14.", 1, 14),
        opt(Enum, "unit", "Temperature unit.", ["celsius", "fahrenheit"], ["kelvin", "rankine"],
            default="celsius", has_default=True),
        opt(Bool, "include_hourly", "Whether to include an hourly breakdown.", default=False, has_default=True),
    ]),
    ("book_flight", "Book a one-way flight between two airports.", [
        Text("origin", "IATA code of the departure airport.", AIRPORTS),
        Text("destination", "IATA code of the arrival airport.", AIRPORTS),
        Text("date", "Departure date, YYYY-MM-DD.", DATES),
        opt(Int, "passengers", "Number of passengers.", 1, 6, default=1, has_default=True),
        opt(Enum, "cabin_class", "Cabin class.", ["economy", "premium_economy", "business", "first"],
            ["luxury", "coach_plus", "standard"], default="economy", has_default=True),
    ]),
    ("convert_currency", "Convert an amount from one currency to another at today's rate.", [
        Float("amount", "The amount to convert.", 1, 5000),
        Enum("from_currency", "ISO 4217 code of the source currency.", CURRENCIES, ["BTC", "XYZ", "DOLLAR"]),
        Enum("to_currency", "ISO 4217 code of the target currency.", CURRENCIES, ["ETH", "ABC", "EURO"]),
    ]),
    ("calculate_bmi", "Calculate the body mass index.", [
        Float("weight_kg", "Body weight in kilograms.", 40, 140, digits=1),
        Float("height_m", "Height in metres.", 1.4, 2.1),
        opt(Int, "age", "Age in years, used for the category.", 16, 90),
    ]),
    ("search_restaurants", "Search restaurants near a location.", [
        Text("location", "City to search in.", CITIES),
        opt(StrList, "cuisine", "Cuisines to include.", CUISINES, 1, 3),
        opt(Int, "price_level", "Maximum price level, 1 (cheap) to 4 (expensive).", 1, 4),
        opt(Bool, "open_now", "Only restaurants open now.", default=False, has_default=True),
    ]),
    ("send_email", "Send an email.", [
        StrList("to", "Recipient addresses.", EMAILS, 1, 3),
        Text("subject", "Subject line.", SUBJECTS),
        Text("body", "Plain-text body.", BODIES),
        opt(StrList, "cc", "Carbon-copy addresses.", EMAILS, 1, 2),
        opt(Enum, "priority", "Message priority.", ["low", "normal", "high"], ["urgent", "critical"],
            default="normal", has_default=True),
    ]),
    ("create_calendar_event", "Create an event in the user's calendar.", [
        Text("title", "Event title.", TITLES),
        Text("start_time", "Start, ISO 8601 local time.", TIMES),
        Int("duration_minutes", "Length of the event in minutes.", 15, 180),
        opt(StrList, "attendees", "Attendee email addresses.", EMAILS, 1, 3),
        opt(Dict, "reminder", "Reminder settings.",
            {"method": ("string", ["email", "popup", "sms"]), "minutes_before": ("integer", [5, 10, 15, 30, 60])},
            ["method", "minutes_before"], lambda rng: ["method", "minutes_before"]),
    ]),
    ("get_stock_price", "Get the latest price of a stock.", [
        Text("symbol", "Ticker symbol.", SYMBOLS),
        opt(Enum, "exchange", "Stock exchange.", ["NASDAQ", "NYSE", "LSE", "TSE"], ["CRYPTO", "OTCX"]),
        opt(Bool, "include_history", "Include the last 30 days of prices.", default=False, has_default=True),
    ]),
    ("calculate_mortgage", "Calculate the monthly payment of a fixed-rate mortgage.", [
        Float("principal", "Loan amount.", 50000, 900000, digits=2),
        Float("annual_rate", "Annual interest rate in percent.", 1.5, 9.5),
        Int("years", "Loan term in years.", 5, 40),
        opt(Float, "extra_payment", "Extra monthly payment.", 10, 900, default=0.0, has_default=True),
    ]),
    ("translate_text", "Translate text into another language.", [
        Text("text", "Text to translate.", TEXTS),
        Enum("target_language", "ISO 639-1 code of the target language.", LANGS, ["klingon", "xx", "elvish"]),
        opt(Enum, "source_language", "ISO 639-1 code of the source language.", LANGS, ["yy", "latin1"]),
        opt(Enum, "formality", "Formality of the translation.", ["default", "formal", "informal"],
            ["casual_plus", "rude"], default="default", has_default=True),
    ]),
    ("find_hotels", "Find available hotels in a city.", [
        Text("city", "City to stay in.", CITIES),
        Text("check_in", "Check-in date, YYYY-MM-DD.", DATES),
        Int("nights", "Number of nights.", 1, 14),
        opt(Int, "guests", "Number of guests.", 1, 6, default=2, has_default=True),
        opt(StrList, "amenities", "Required amenities.", AMENITIES, 1, 3),
        opt(Float, "max_price", "Maximum price per night.", 50, 600),
    ]),
    ("set_thermostat", "Set the thermostat in a room.", [
        Enum("room", "Room name.", ["living_room", "bedroom", "kitchen", "office", "bathroom"],
             ["garage_loft", "attic", "basement_2"]),
        Float("temperature", "Target temperature in degrees Celsius.", 15, 28, digits=1),
        opt(Enum, "mode", "Operating mode.", ["heat", "cool", "auto"], ["turbo", "dry"],
            default="auto", has_default=True),
        opt(Bool, "eco", "Enable eco mode.", default=False, has_default=True),
    ]),
    ("update_user_profile", "Update fields of a user's profile.", [
        Int("user_id", "Numeric user id.", 1000, 99999),
        Dict("updates", "Fields to change.",
             {"name": ("string", NAMES), "email": ("string", EMAILS), "phone": ("string", PHONES)}, [],
             lambda rng: sorted(rng.sample(["name", "email", "phone"], rng.randint(1, 3)))),
        opt(Bool, "notify", "Email the user about the change.", default=True, has_default=True),
    ]),
    ("get_directions", "Get directions between two places.", [
        Text("start", "Starting point.", CITIES),
        Text("end", "Destination.", CITIES),
        opt(Enum, "mode", "Travel mode.", ["driving", "walking", "bicycling", "transit"], ["teleport", "flying"],
            default="driving", has_default=True),
        opt(StrList, "avoid", "Route features to avoid.", ["tolls", "highways", "ferries"], 1, 2, enum=True),
    ]),
    ("play_music", "Play music on a device.", [
        Text("query", "Song, artist or playlist to play.", SONGS),
        opt(Bool, "shuffle", "Shuffle the queue.", default=False, has_default=True),
        opt(Int, "volume", "Volume from 0 to 100.", 0, 100),
        opt(Enum, "device", "Output device.", ["speaker", "headphones", "tv", "car"], ["toaster", "fridge"]),
    ]),
    ("create_order", "Place an order for a customer.", [
        Int("customer_id", "Numeric customer id.", 1, 50000),
        DictList("items", "Line items.", {"sku": ("string", SKUS), "quantity": ("integer", list(range(1, 10)))}),
        opt(Bool, "express", "Use express shipping.", default=False, has_default=True),
    ]),
    ("calculate_area", "Calculate the area of a 2-D shape.", [
        Enum("shape", "Shape kind.", ["circle", "rectangle", "triangle", "square"], ["hexagon", "blob"]),
        Dict("dimensions", "Dimensions of the shape (radius, width, height, base or side).",
             {k: ("float", [1.5, 2.25, 3.5, 4.75, 6.5, 8.25, 10.5]) for k in ["radius", "width", "height", "base",
                                                                            "side"]}, [],
             lambda rng: rng.choice([["radius"], ["height", "width"], ["base", "height"], ["side"]])),
        opt(Enum, "unit", "Length unit.", ["cm", "m", "in", "ft"], ["furlong", "parsec"]),
    ]),
    ("get_movie_showtimes", "List showtimes of a movie in a city.", [
        Text("movie_title", "Title of the movie.", MOVIES),
        Text("city", "City.", CITIES),
        opt(Text, "date", "Date, YYYY-MM-DD; today if omitted.", DATES),
        opt(Enum, "format", "Screening format.", ["2D", "3D", "IMAX"], ["4DX-ULTRA", "VR"]),
    ]),
    ("log_workout", "Log a workout session.", [
        Enum("activity", "Kind of workout.", ["running", "cycling", "swimming", "rowing", "yoga", "strength"],
             ["napping", "sofa"]),
        Int("duration_minutes", "Duration in minutes.", 10, 180),
        opt(Int, "calories", "Calories burned.", 50, 1500),
        opt(Float, "distance_km", "Distance in kilometres.", 1, 60),
        opt(StrList, "tags", "Free-form tags.", TAGS, 1, 3),
    ]),
    ("query_database", "Query rows from a table.", [
        Enum("table", "Table name.", ["users", "orders", "invoices", "products"], ["passwords", "tmp_x"]),
        opt(Dict, "filters", "Column equality filters.", {c: ("string", v) for c, v in COLUMN_VALUES.items()}, [],
            lambda rng: sorted(rng.sample(COLUMNS, rng.randint(1, 2)))),
        opt(Int, "limit", "Maximum rows to return.", 1, 500, default=100, has_default=True),
        opt(Text, "order_by", "Column to sort by.", COLUMNS),
        opt(Bool, "ascending", "Sort ascending.", default=True, has_default=True),
    ]),
]


def function_doc(template):
    name, desc, params = template
    return {"name": name, "description": desc, "parameters": {
        "type": "dict",
        "properties": {p.name: p.schema for p in params},
        "required": [p.name for p in params if p.required],
    }}


DOCS = [function_doc(t) for t in TEMPLATES]


# ---------------------------------------------------------------------------------------------
# One call: its ground truth (possible answers) and the model's correct output.


def sample_call(rng, index):
    name, _, params = TEMPLATES[index]
    answer, args = {}, {}
    for p in params:
        if p.required or rng.random() < 0.45:  # the request names a value for this parameter
            alts = p.sample(rng)
            answer[p.name] = alts
            args[p.name] = p.pick(rng, alts)
        else:  # not asked for: omitted, or passed at its default
            answer[p.name] = ([p.default, ""] if p.has_default else [""])
            if p.has_default and rng.random() < 0.3:
                args[p.name] = p.default
    return {"name": name, "params": params, "answer": answer, "args": args}


def wrong_type(rng, value, p):
    t = p.type
    if t in ("integer", "float"):
        return str(value)
    if t == "boolean":
        return "true" if value else "false"
    if t == "string":
        return [value]
    if t == "array":
        return ", ".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    return json.dumps(value)  # dict


def mutate_call(rng, call, kind):
    """Inject one fault of `kind` into call["args"]; False if this call cannot take it."""
    args, params = call["args"], {p.name: p for p in call["params"]}
    present = [k for k, v in args.items() if v != ""]
    if kind == "missing_required":
        req = [p.name for p in call["params"] if p.required]
        if not req:
            return False
        del args[rng.choice(req)]
    elif kind == "wrong_type":
        k = rng.choice(present)
        args[k] = wrong_type(rng, args[k], params[k])
    elif kind == "unknown_value":
        k = rng.choice(present)
        ok = [standardize(v) for v in call["answer"][k]]
        for _ in range(20):
            v = params[k].bad(rng, args[k])
            if standardize(v) not in ok:
                args[k] = v
                break
        else:
            return False
    elif kind == "unexpected_param":
        args[rng.choice(["verbose", "timeout", "api_key", "format_output", "lang"])] = rng.choice([True, 30, "json"])
    else:
        raise ValueError(kind)
    return True


def output_of(call):
    return {call["name"]: call["args"]}


def answer_of(call):
    return {call["name"]: call["answer"]}


def make_item(rng, category, i, error_rate):
    n_docs = len(TEMPLATES)
    faulty = rng.random() < error_rate
    if category == "simple":
        target = rng.randrange(n_docs)
        calls = [sample_call(rng, target)]
        docs = [DOCS[target]]
        kinds = ["wrong_type", "missing_required", "unknown_value", "unexpected_param"]
        weights = [0.3, 0.25, 0.3, 0.15]
    elif category == "multiple":
        target = rng.randrange(n_docs)
        distractors = rng.sample([j for j in range(n_docs) if j != target], rng.randint(1, 3))
        calls = [sample_call(rng, target)]
        docs = [DOCS[j] for j in [target] + distractors]
        rng.shuffle(docs)
        kinds = ["wrong_type", "missing_required", "unknown_value", "unexpected_param", "wrong_function"]
        weights = [0.25, 0.2, 0.25, 0.1, 0.2]
    else:  # parallel: 2-3 calls, to one function (BFCL "parallel") or several ("parallel_multiple")
        k = rng.randint(2, 3)
        if rng.random() < 0.5:
            idx = [rng.randrange(n_docs)] * k
        else:
            idx = rng.sample(range(n_docs), k)
        calls, seen = [], set()
        for j in idx:
            for _ in range(50):  # distinct first required value, so unordered matching stays unambiguous
                c = sample_call(rng, j)
                first = c["params"][0].name
                key = (c["name"], json.dumps(standardize(c["answer"][first][0])))
                if key not in seen:
                    break
            seen.add(key)
            calls.append(c)
        used = sorted(set(idx))
        docs = [DOCS[j] for j in used]
        if rng.random() < 0.3:
            docs.append(DOCS[rng.choice([j for j in range(n_docs) if j not in used])])
        rng.shuffle(docs)
        kinds = ["wrong_type", "missing_required", "unknown_value", "unexpected_param", "wrong_count"]
        weights = [0.25, 0.2, 0.25, 0.1, 0.2]

    answers = [answer_of(c) for c in calls]
    mutation = None
    if faulty:
        while mutation is None:
            kind = rng.choices(kinds, weights)[0]
            if kind == "wrong_function":
                others = [d["name"] for d in docs if d["name"] != calls[0]["name"]]
                pick = rng.choice(others)
                j = next(n for n, t in enumerate(TEMPLATES) if t[0] == pick)
                calls = [sample_call(rng, j)]
                mutation = kind
            elif kind == "wrong_count":
                calls = calls[:]
                calls.pop(rng.randrange(len(calls)))
                mutation = kind
            elif mutate_call(rng, rng.choice(calls), kind):
                mutation = kind
    outputs = [output_of(c) for c in calls]
    if category == "parallel":
        rng.shuffle(outputs)
    return {"id": f"{category}_{i}", "category": category, "function": docs, "model_output": outputs,
            "possible_answer": answers, "mutation": mutation}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.2)
    parser.add_argument("--mix", default="simple=0.4,parallel=0.3,multiple=0.3")
    parser.add_argument("--out", default="-", help="output JSONL path ('-' for stdout)")
    args = parser.parse_args(argv)
    mix = {k: float(v) for k, v in (part.split("=") for part in args.mix.split(","))}
    rng = random.Random(args.seed)
    cats = list(mix)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    try:
        for i in range(args.n):
            cat = rng.choices(cats, [mix[c] for c in cats])[0]
            out.write(json.dumps(make_item(rng, cat, i, args.error_rate)) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


if __name__ == "__main__":
    main()
