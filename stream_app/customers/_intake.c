/* The intake fast path compiled: JSON bytes of the plain message shape to a stored event.

   A C twin of ``fast_stored_python`` in intake.py, which stays the reference: same
   signature, same result, or None for anything it does not recognise (which then takes full
   validation). It reads the message itself instead of building a dict: an object of at
   most one of each known key, whose values are strings of printable ASCII without escapes,
   unsigned integers or null. Anything else (an escape, a non-ASCII byte, a float, a nested
   value, a duplicate key) answers None. So it accepts a subset of what the Python fast path
   accepts, and tests/test_intake_compiled.py checks that it gives the same answer wherever
   it gives one.

   ``offer_run`` and ``drain_run`` are the per-event loops of ``PartitionState.offer_runs``
   and ``drain`` around it, which stop before any message or entry that needs the Python
   code (full validation, a dead letter, another topic); tests/test_offer_compiled.py runs
   a partition both ways and compares. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ID_MAX 128
#define MAX_AMOUNT 1000000000LL
#define MAX_MICROS (MAX_AMOUNT * 1000000LL)
#define SCHEMA_VERSION 1
#define INT_DIGITS_MAX 18
#define DEFAULT_MAX_BYTES (64 * 1024) /* schemas.parse.DEFAULT_MAX_BYTES */

/* Ranks of stored events (timeline.py). */
enum { SIGNUP = 0, CLICK = 1, PURCHASE = 2, SURVEY = 3, CANCELLATION = 4 };

enum {
    F_EVENT_ID,
    F_CUSTOMER_ID,
    F_OCCURRED_AT,
    F_SCHEMA_VERSION,
    F_REGION,
    F_CAMPAIGN_ID,
    F_CHANNEL,
    F_ORDER_ID,
    F_AMOUNT,
    F_CURRENCY,
    F_REASON,
    F_COST,
    F_SURVEY_TYPE,
    F_SCORE,
    F_COUNT
};

static const char *const FIELD_NAMES[F_COUNT] = {
    "event_id", "customer_id", "occurred_at", "schema_version", "region",
    "campaign_id", "channel", "order_id", "amount", "currency",
    "reason", "cost", "survey_type", "score",
};

#define BIT(f) (1u << (f))
#define COMMON (BIT(F_EVENT_ID) | BIT(F_CUSTOMER_ID) | BIT(F_OCCURRED_AT) | BIT(F_SCHEMA_VERSION))

enum { V_ABSENT = 0, V_NULL, V_STR, V_INT };

typedef struct {
    int kind;
    const char *text; /* V_STR: the characters between the quotes */
    Py_ssize_t len;
    long long number; /* V_INT */
} Value;

static PyObject *str_unknown, *str_n, *str_c;
static PyObject *s_topic, *s_offset, *s_value, *s_key, *s_ids;
static PyObject *type_names[5];

static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* A string body up to its closing quote: printable ASCII, no escapes. NULL if not that. */
static inline const char *scan_string(const char *p, const char *end) {
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20 || c > 0x7e || c == '\\') return NULL;
        p++;
    }
    return NULL;
}

static int field_index(const char *name, Py_ssize_t len) {
    for (int i = 0; i < F_COUNT; i++) {
        if ((Py_ssize_t)strlen(FIELD_NAMES[i]) == len && memcmp(FIELD_NAMES[i], name, len) == 0)
            return i;
    }
    return -1;
}

/* Fills ``values``; 0 when the bytes are an object of the accepted kind, else -1. */
static int read_object(const char *p, const char *end, unsigned allowed, Value *values) {
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
        goto done;
    }
    for (;;) {
        if (p >= end || *p != '"') return -1;
        const char *name = p + 1;
        const char *close = scan_string(name, end);
        if (close == NULL) return -1;
        int field = field_index(name, close - name);
        if (field < 0 || !(allowed & BIT(field)) || values[field].kind != V_ABSENT) return -1;
        p = skip_ws(close + 1, end);
        if (p >= end || *p != ':') return -1;
        p = skip_ws(p + 1, end);
        if (p >= end) return -1;
        Value *value = &values[field];
        if (*p == '"') {
            const char *text = p + 1;
            close = scan_string(text, end);
            if (close == NULL) return -1;
            value->kind = V_STR;
            value->text = text;
            value->len = close - text;
            p = close + 1;
        } else if (*p >= '0' && *p <= '9') {
            /* JSON: no leading zeros; a fraction or exponent makes a float, left to Python. */
            const char *digits = p;
            long long number = 0;
            while (p < end && *p >= '0' && *p <= '9') {
                number = number * 10 + (*p - '0');
                p++;
                if (p - digits > INT_DIGITS_MAX) return -1;
            }
            if ((*digits == '0' && p - digits > 1) ||
                (p < end && (*p == '.' || *p == 'e' || *p == 'E')))
                return -1;
            value->kind = V_INT;
            value->number = number;
        } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            value->kind = V_NULL;
            p += 4;
        } else {
            return -1;
        }
        p = skip_ws(p, end);
        if (p >= end) return -1;
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',') return -1;
        p = skip_ws(p + 1, end);
    }
done:
    p = skip_ws(p, end);
    return p == end ? 0 : -1;
}

static inline int digits2(const char *p) {
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9') return -1;
    return (p[0] - '0') * 10 + (p[1] - '0');
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    const int era = (y >= 0 ? y : y - 399) / 400;
    const int yoe = y - era * 400;
    const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (long long)era * 146097 + doe - 719468;
}

static int month_days(int y, int m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) return 29;
    return days[m - 1];
}

/* Microseconds since the epoch of ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)``, years
   1900-2099 (as intake.py's _TIMESTAMP and datetime.fromisoformat); 0 if not such a time. */
static int timestamp_us(const char *s, Py_ssize_t n, long long *out) {
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
        return 0;
    int century = digits2(s), yy = digits2(s + 2), month = digits2(s + 5), day = digits2(s + 8);
    int hour = digits2(s + 11), minute = digits2(s + 14), second = digits2(s + 17);
    if ((century != 19 && century != 20) || yy < 0 || month < 1 || month > 12 || day < 1 ||
        hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59)
        return 0;
    int year = century * 100 + yy;
    if (day > month_days(year, month)) return 0;
    Py_ssize_t i = 19;
    long long fraction = 0;
    if (i < n && s[i] == '.') {
        i++;
        Py_ssize_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - start < 6) {
            fraction = fraction * 10 + (s[i] - '0');
            i++;
        }
        Py_ssize_t places = i - start;
        if (places == 0) return 0;
        for (Py_ssize_t k = places; k < 6; k++) fraction *= 10;
    }
    long long offset_s;
    if (n - i == 1 && s[i] == 'Z') {
        offset_s = 0;
    } else if (n - i == 6 && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int off_hour = digits2(s + i + 1), off_minute = digits2(s + i + 4);
        /* timezone() takes offsets strictly inside a day. */
        if (off_hour < 0 || off_hour > 23 || off_minute < 0 || off_minute > 59) return 0;
        offset_s = (off_hour * 3600LL + off_minute * 60LL) * (s[i] == '-' ? -1 : 1);
    } else {
        return 0;
    }
    long long seconds = days_from_civil(year, month, day) * 86400LL + hour * 3600LL +
                        minute * 60LL + second - offset_s;
    *out = seconds * 1000000LL + fraction;
    return 1;
}

/* Micro-units of an amount (intake.py's _micros); -1 if not a plain one. */
static long long micros(const Value *value, int places) {
    if (value->kind == V_INT) return value->number <= MAX_AMOUNT ? value->number * 1000000LL : -1;
    if (value->kind != V_STR) return -1;
    const char *s = value->text;
    Py_ssize_t n = value->len, i = 0;
    long long whole = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        if (i == 10) return -1; /* at most 10 integer digits */
        whole = whole * 10 + (s[i] - '0');
        i++;
    }
    if (i == 0) return -1;
    long long result = whole * 1000000LL;
    if (i < n) {
        if (s[i] != '.') return -1;
        Py_ssize_t start = ++i;
        long long fraction = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (i - start == places) return -1;
            fraction = fraction * 10 + (s[i] - '0');
            i++;
        }
        Py_ssize_t count = i - start;
        if (i != n || count == 0) return -1;
        for (Py_ssize_t k = count; k < 6; k++) fraction *= 10;
        result += fraction;
    }
    return result <= MAX_MICROS ? result : -1;
}

static inline PyObject *ascii(const Value *value) {
    PyObject *text = PyUnicode_New(value->len, 127);
    if (text != NULL) memcpy(PyUnicode_DATA(text), value->text, value->len);
    return text;
}

static inline int is_id(const Value *value) {
    return value->kind == V_STR && value->len > 0 && value->len <= ID_MAX;
}

static inline int is_campaign(const Value *value) {
    return is_id(value) && memchr(value->text, ' ', value->len) == NULL;
}

static inline int is_optional_text(const Value *value) {
    return value->kind == V_ABSENT || value->kind == V_NULL || value->kind == V_STR;
}

static int is_region(const Value *value) {
    if (value->len < 2 || value->len > 8) return 0;
    for (Py_ssize_t i = 0; i < value->len; i++) {
        char c = value->text[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* A list of the event's time, rank and id, then ``extra`` items stolen from the caller. */
static PyObject *stored(long long t_us, int rank, const Value *event_id, int extra,
                        PyObject **items) {
    PyObject *list = PyList_New(3 + extra);
    PyObject *t = PyLong_FromLongLong(t_us);
    PyObject *id = ascii(event_id);
    int failed = list == NULL || t == NULL || id == NULL;
    for (int i = 0; i < extra; i++) failed |= items[i] == NULL;
    if (failed) {
        Py_XDECREF(list);
        Py_XDECREF(t);
        Py_XDECREF(id);
        for (int i = 0; i < extra; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    PyList_SET_ITEM(list, 0, t);
    PyList_SET_ITEM(list, 1, PyLong_FromLong(rank)); /* small ints are cached: no failure */
    PyList_SET_ITEM(list, 2, id);
    for (int i = 0; i < extra; i++) PyList_SET_ITEM(list, 3 + i, items[i]);
    return list;
}

static PyObject *new_ref(PyObject *object) {
    Py_INCREF(object);
    return object;
}

/* The position of an event type in schemas.EventType order, or -1 with KeyError set. */
static int type_index(PyObject *event_type) {
    if (!PyUnicode_Check(event_type)) {
        PyErr_SetString(PyExc_TypeError, "event_type must be str");
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        /* Names are interned on both sides in practice; equality covers the rest. */
        if (event_type == type_names[i] || PyUnicode_Compare(event_type, type_names[i]) == 0)
            return i;
    }
    if (!PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "%R", event_type);
    return -1;
}

/* (customer, stored event) or None, as a new reference; NULL on error. */
static PyObject *stored_event(int type, PyObject *value, PyObject *key, PyObject *currency,
                              Py_ssize_t max_bytes) {
    if (!PyBytes_Check(value)) Py_RETURN_NONE; /* None, or a buffer Python handles */
    Py_ssize_t size = PyBytes_GET_SIZE(value);
    if (size == 0 || size > max_bytes) Py_RETURN_NONE;
    if (key != Py_None && !PyBytes_Check(key)) Py_RETURN_NONE;

    /* In the order of schemas.EventType: signup, purchase, cancellation, click, survey. */
    static const unsigned allowed[5] = {
        COMMON | BIT(F_REGION) | BIT(F_CAMPAIGN_ID) | BIT(F_CHANNEL),
        COMMON | BIT(F_ORDER_ID) | BIT(F_AMOUNT) | BIT(F_CURRENCY),
        COMMON | BIT(F_REASON),
        COMMON | BIT(F_CAMPAIGN_ID) | BIT(F_COST),
        COMMON | BIT(F_SURVEY_TYPE) | BIT(F_SCORE),
    };
    Value values[F_COUNT];
    memset(values, 0, sizeof values);
    const char *data = PyBytes_AS_STRING(value);
    if (read_object(data, data + size, allowed[type], values) < 0) Py_RETURN_NONE;

    const Value *event_id = &values[F_EVENT_ID], *customer = &values[F_CUSTOMER_ID];
    const Value *stamp = &values[F_OCCURRED_AT], *version = &values[F_SCHEMA_VERSION];
    long long t_us;
    if (!is_id(event_id) || !is_id(customer) || stamp->kind != V_STR ||
        !timestamp_us(stamp->text, stamp->len, &t_us))
        Py_RETURN_NONE;
    if (version->kind != V_ABSENT && !(version->kind == V_INT && version->number == SCHEMA_VERSION))
        Py_RETURN_NONE;
    if (key != Py_None && (PyBytes_GET_SIZE(key) != customer->len ||
                           memcmp(PyBytes_AS_STRING(key), customer->text, customer->len) != 0))
        Py_RETURN_NONE;

    PyObject *event = NULL;
    switch (type) {
        case 0: { /* signup */
            const Value *region = &values[F_REGION], *campaign = &values[F_CAMPAIGN_ID];
            PyObject *region_text;
            if (region->kind == V_ABSENT || region->kind == V_NULL) {
                region_text = new_ref(str_unknown);
            } else if (region->kind == V_STR && is_region(region)) {
                region_text = PyUnicode_New(region->len, 127);
                if (region_text != NULL) {
                    char *out = (char *)PyUnicode_DATA(region_text);
                    for (Py_ssize_t i = 0; i < region->len; i++) {
                        char c = region->text[i];
                        out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
                    }
                }
            } else {
                Py_RETURN_NONE;
            }
            PyObject *campaign_text;
            if (campaign->kind == V_ABSENT || campaign->kind == V_NULL) {
                campaign_text = new_ref(Py_None);
            } else if (is_campaign(campaign)) {
                campaign_text = ascii(campaign);
            } else {
                Py_XDECREF(region_text);
                Py_RETURN_NONE;
            }
            if (!is_optional_text(&values[F_CHANNEL])) {
                Py_XDECREF(region_text);
                Py_XDECREF(campaign_text);
                Py_RETURN_NONE;
            }
            PyObject *items[2] = {region_text, campaign_text};
            event = stored(t_us, SIGNUP, event_id, 2, items);
            break;
        }
        case 1: { /* purchase */
            const Value *order = &values[F_ORDER_ID], *money = &values[F_CURRENCY];
            if (!is_id(order) || money->kind != V_STR) Py_RETURN_NONE;
            /* The reporting currency is three ASCII letters (settings), so compact ASCII. */
            if (!PyUnicode_IS_ASCII(currency) || PyUnicode_GET_LENGTH(currency) != money->len ||
                memcmp(PyUnicode_DATA(currency), money->text, money->len) != 0)
                Py_RETURN_NONE;
            long long amount = micros(&values[F_AMOUNT], 4);
            if (amount <= 0) Py_RETURN_NONE;
            PyObject *items[1] = {PyLong_FromLongLong(amount)};
            event = stored(t_us, PURCHASE, event_id, 1, items);
            break;
        }
        case 2: /* cancellation */
            if (!is_optional_text(&values[F_REASON])) Py_RETURN_NONE;
            event = stored(t_us, CANCELLATION, event_id, 0, NULL);
            break;
        case 3: { /* campaign_click */
            const Value *campaign = &values[F_CAMPAIGN_ID], *cost = &values[F_COST];
            if (!is_campaign(campaign)) Py_RETURN_NONE;
            long long cost_micros = 0;
            if (cost->kind != V_ABSENT && cost->kind != V_NULL) {
                cost_micros = micros(cost, 6);
                if (cost_micros < 0) Py_RETURN_NONE;
            }
            PyObject *items[2] = {ascii(campaign), PyLong_FromLongLong(cost_micros)};
            event = stored(t_us, CLICK, event_id, 2, items);
            break;
        }
        default: { /* survey */
            const Value *kind = &values[F_SURVEY_TYPE], *score = &values[F_SCORE];
            if (kind->kind != V_STR || score->kind != V_INT) Py_RETURN_NONE;
            PyObject *letter;
            if (kind->len == 3 && memcmp(kind->text, "nps", 3) == 0) {
                if (score->number > 10) Py_RETURN_NONE;
                letter = str_n;
            } else if (kind->len == 4 && memcmp(kind->text, "csat", 4) == 0) {
                if (score->number < 1 || score->number > 5) Py_RETURN_NONE;
                letter = str_c;
            } else {
                Py_RETURN_NONE;
            }
            PyObject *items[2] = {new_ref(letter), PyLong_FromLongLong(score->number)};
            event = stored(t_us, SURVEY, event_id, 2, items);
            break;
        }
    }
    if (event == NULL) return NULL;
    PyObject *customer_text = ascii(customer);
    if (customer_text == NULL) {
        Py_DECREF(event);
        return NULL;
    }
    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(event);
        Py_DECREF(customer_text);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, customer_text);
    PyTuple_SET_ITEM(result, 1, event);
    return result;
}

static PyObject *fast_stored(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 4 || nargs > 5) {
        PyErr_SetString(PyExc_TypeError,
                        "fast_stored(event_type, value, key, reporting_currency[, max_bytes])");
        return NULL;
    }
    Py_ssize_t max_bytes = DEFAULT_MAX_BYTES;
    if (nargs == 5) {
        max_bytes = PyLong_AsSsize_t(args[4]);
        if (max_bytes == -1 && PyErr_Occurred()) return NULL;
    }
    if (!PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "reporting_currency must be str");
        return NULL;
    }
    int type = type_index(args[0]);
    if (type < 0) return NULL;
    return stored_event(type, args[1], args[2], args[3], max_bytes);
}

/* ``PartitionState.offer_runs``'s loop for the messages of one topic, from ``start`` on:
   offsets already offered are skipped; events of the plain shape that are neither too late
   nor duplicates are appended to the buffer as (t_us, seq, (customer, event id), event,
   message). It stops at the first message it cannot take alone (another topic, a message
   for full validation, one too late: the caller handles that one) and returns
   (index, next offset, head, seq, duplicates). */
static PyObject *offer_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError,
                        "offer_run(messages, start, topic, event_type, reporting_currency, "
                        "next_offset, head, lateness_us, customers, buffered_ids, buffer, seq)");
        return NULL;
    }
    PyObject *messages = args[0], *topic = args[2], *currency = args[4], *head_arg = args[6];
    PyObject *customers = args[8], *buffered_ids = args[9], *buffer = args[10];
    if (!PyList_Check(messages) || !PyUnicode_Check(topic) || !PyUnicode_Check(currency) ||
        !PyDict_Check(customers) || !PySet_Check(buffered_ids) || !PyList_Check(buffer)) {
        PyErr_SetString(PyExc_TypeError, "offer_run: an argument of the wrong type");
        return NULL;
    }
    int type = type_index(args[3]);
    if (type < 0) return NULL;
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    long long next_offset = PyLong_AsLongLong(args[5]);
    long long lateness_us = PyLong_AsLongLong(args[7]);
    long long seq = PyLong_AsLongLong(args[11]);
    int has_head = head_arg != Py_None;
    long long head = has_head ? PyLong_AsLongLong(head_arg) : 0;
    if (PyErr_Occurred()) return NULL;
    long long duplicates = 0;
    Py_ssize_t count = PyList_GET_SIZE(messages);
    for (; index < count; index++) {
        PyObject *message = PyList_GET_ITEM(messages, index);
        PyObject *message_topic = PyObject_GetAttr(message, s_topic);
        if (message_topic == NULL) return NULL;
        int same = message_topic == topic || PyUnicode_Compare(message_topic, topic) == 0;
        Py_DECREF(message_topic);
        if (PyErr_Occurred()) return NULL;
        if (!same) break;
        PyObject *offset_obj = PyObject_GetAttr(message, s_offset);
        if (offset_obj == NULL) return NULL;
        long long offset = PyLong_AsLongLong(offset_obj);
        Py_DECREF(offset_obj);
        if (offset == -1 && PyErr_Occurred()) return NULL;
        if (offset < next_offset) continue; /* offered before (a seek during a rebalance) */
        PyObject *value = PyObject_GetAttr(message, s_value);
        PyObject *key = value ? PyObject_GetAttr(message, s_key) : NULL;
        PyObject *pair = key ? stored_event(type, value, key, currency, DEFAULT_MAX_BYTES) : NULL;
        Py_XDECREF(value);
        Py_XDECREF(key);
        if (pair == NULL) return NULL;
        if (pair == Py_None) {
            Py_DECREF(pair);
            break; /* full validation decides, in Python */
        }
        PyObject *customer = PyTuple_GET_ITEM(pair, 0), *event = PyTuple_GET_ITEM(pair, 1);
        PyObject *t_obj = PyList_GET_ITEM(event, 0), *event_id = PyList_GET_ITEM(event, 2);
        long long t_us = PyLong_AsLongLong(t_obj);
        if (has_head && t_us < head - lateness_us) {
            Py_DECREF(pair);
            break; /* too late: a dead letter, made in Python */
        }
        next_offset = offset + 1;
        if (!has_head || t_us > head) {
            head = t_us;
            has_head = 1;
        }
        PyObject *ident = PyTuple_Pack(2, customer, event_id);
        if (ident == NULL) {
            Py_DECREF(pair);
            return NULL;
        }
        int duplicate = PySet_Contains(buffered_ids, ident);
        if (duplicate == 0) {
            PyObject *known = PyDict_GetItemWithError(customers, customer);
            if (known != NULL) {
                PyObject *ids = PyObject_GetAttr(known, s_ids);
                duplicate = ids == NULL ? -1 : PySet_Contains(ids, event_id);
                Py_XDECREF(ids);
            } else if (PyErr_Occurred()) {
                duplicate = -1;
            }
        }
        if (duplicate < 0) {
            Py_DECREF(ident);
            Py_DECREF(pair);
            return NULL;
        }
        if (duplicate) {
            duplicates++;
            Py_DECREF(ident);
            Py_DECREF(pair);
            continue;
        }
        seq++;
        PyObject *seq_obj = PyLong_FromLongLong(seq);
        PyObject *entry = seq_obj ? PyTuple_Pack(5, t_obj, seq_obj, ident, event, message) : NULL;
        int failed = entry == NULL || PySet_Add(buffered_ids, ident) < 0 ||
                     PyList_Append(buffer, entry) < 0;
        Py_XDECREF(seq_obj);
        Py_XDECREF(entry);
        Py_DECREF(ident);
        Py_DECREF(pair);
        if (failed) return NULL;
    }
    if (has_head) return Py_BuildValue("(nLLLL)", index, next_offset, head, seq, duplicates);
    return Py_BuildValue("(nLOLL)", index, next_offset, Py_None, seq, duplicates);
}

/* ``PartitionState.drain``'s loop over the ready buffer entries from ``start`` on: each
   leaves the buffered ids; the watermark moves to the newest time; an event the customer
   already has is a duplicate; the others are grouped by customer in ``pending`` and counted
   by rank in ``ranks``. It stops before an entry too late for the watermark (the caller
   makes its dead letter) and returns (index, watermark, duplicates). */
static PyObject *drain_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "drain_run(ready, start, buffered_ids, customers, pending, ranks, "
                        "watermark, lateness_us)");
        return NULL;
    }
    PyObject *ready = args[0], *buffered_ids = args[2], *customers = args[3];
    PyObject *pending = args[4], *ranks = args[5], *watermark_arg = args[6];
    if (!PyList_Check(ready) || !PySet_Check(buffered_ids) || !PyDict_Check(customers) ||
        !PyDict_Check(pending) || !PyList_Check(ranks)) {
        PyErr_SetString(PyExc_TypeError, "drain_run: an argument of the wrong type");
        return NULL;
    }
    Py_ssize_t index = PyLong_AsSsize_t(args[1]);
    long long lateness_us = PyLong_AsLongLong(args[7]);
    int has_watermark = watermark_arg != Py_None;
    long long watermark = has_watermark ? PyLong_AsLongLong(watermark_arg) : 0;
    if (PyErr_Occurred()) return NULL;
    long long duplicates = 0;
    Py_ssize_t count = PyList_GET_SIZE(ready);
    for (; index < count; index++) {
        PyObject *entry = PyList_GET_ITEM(ready, index);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5) {
            PyErr_SetString(PyExc_TypeError, "a buffer entry must be a tuple of 5");
            return NULL;
        }
        PyObject *ident = PyTuple_GET_ITEM(entry, 2), *event = PyTuple_GET_ITEM(entry, 3);
        if (!PyTuple_Check(ident) || PyTuple_GET_SIZE(ident) != 2 || !PyList_Check(event) ||
            PyList_GET_SIZE(event) < 3) {
            PyErr_SetString(PyExc_TypeError, "a buffer entry of the wrong shape");
            return NULL;
        }
        if (PySet_Discard(buffered_ids, ident) < 0) return NULL;
        long long t_us = PyLong_AsLongLong(PyTuple_GET_ITEM(entry, 0));
        if (t_us == -1 && PyErr_Occurred()) return NULL;
        if (has_watermark && t_us < watermark - lateness_us) break; /* a dead letter */
        if (!has_watermark || t_us > watermark) {
            watermark = t_us;
            has_watermark = 1;
        }
        PyObject *customer = PyTuple_GET_ITEM(ident, 0);
        PyObject *record = PyDict_GetItemWithError(customers, customer);
        if (record == NULL && PyErr_Occurred()) return NULL;
        if (record != NULL) {
            /* Copies of one event cannot both be buffered (offer lets the first in), so a
               copy here is one applied by an earlier drain. */
            PyObject *ids = PyObject_GetAttr(record, s_ids);
            int known = ids == NULL ? -1 : PySet_Contains(ids, PyList_GET_ITEM(event, 2));
            Py_XDECREF(ids);
            if (known < 0) return NULL;
            if (known) {
                duplicates++;
                continue;
            }
        }
        PyObject *events = PyDict_GetItemWithError(pending, customer);
        if (events == NULL) {
            if (PyErr_Occurred()) return NULL;
            events = PyList_New(1);
            if (events == NULL) return NULL;
            PyList_SET_ITEM(events, 0, Py_NewRef(event));
            int failed = PyDict_SetItem(pending, customer, events) < 0;
            Py_DECREF(events);
            if (failed) return NULL;
        } else if (PyList_Append(events, event) < 0) {
            return NULL;
        }
        Py_ssize_t rank = PyLong_AsSsize_t(PyList_GET_ITEM(event, 1));
        if (rank == -1 && PyErr_Occurred()) return NULL;
        if (rank < 0 || rank >= PyList_GET_SIZE(ranks)) {
            PyErr_SetString(PyExc_IndexError, "an event rank outside the ranks");
            return NULL;
        }
        PyObject *old = PyList_GET_ITEM(ranks, rank);
        PyObject *one = PyLong_FromLong(1);
        PyObject *sum = PyNumber_Add(old, one);
        Py_DECREF(one);
        if (sum == NULL) return NULL;
        PyList_SetItem(ranks, rank, sum);
    }
    if (has_watermark) return Py_BuildValue("(nLL)", index, watermark, duplicates);
    return Py_BuildValue("(nOL)", index, Py_None, duplicates);
}

static PyMethodDef methods[] = {
    {"fast_stored", (PyCFunction)(void (*)(void))fast_stored, METH_FASTCALL,
     "fast_stored(event_type, value, key, reporting_currency, max_bytes=65536)\n--\n\n"
     "(customer_id, stored event) for a message of the plain shape, else None."},
    {"offer_run", (PyCFunction)(void (*)(void))offer_run, METH_FASTCALL,
     "offer_run(messages, start, topic, event_type, reporting_currency, next_offset, head,"
     " lateness_us, customers, buffered_ids, buffer, seq)\n--\n\n"
     "Offer one topic's plain messages from start on; (index, next_offset, head, seq,"
     " duplicates)."},
    {"drain_run", (PyCFunction)(void (*)(void))drain_run, METH_FASTCALL,
     "drain_run(ready, start, buffered_ids, customers, pending, ranks, watermark,"
     " lateness_us)\n--\n\n"
     "Apply the drain's per-event rules from start on; (index, watermark, duplicates)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_intake", "The intake fast path, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__intake(void) {
    static const char *const names[5] = {"signup", "purchase", "cancellation",
                                         "campaign_click", "survey"};
    for (int i = 0; i < 5; i++) {
        type_names[i] = PyUnicode_InternFromString(names[i]);
        if (type_names[i] == NULL) return NULL;
    }
    str_unknown = PyUnicode_InternFromString("unknown");
    str_n = PyUnicode_InternFromString("n");
    str_c = PyUnicode_InternFromString("c");
    if (str_unknown == NULL || str_n == NULL || str_c == NULL) return NULL;
    s_topic = PyUnicode_InternFromString("topic");
    s_offset = PyUnicode_InternFromString("offset");
    s_value = PyUnicode_InternFromString("value");
    s_key = PyUnicode_InternFromString("key");
    s_ids = PyUnicode_InternFromString("ids");
    if (!s_topic || !s_offset || !s_value || !s_key || !s_ids) return NULL;
    return PyModule_Create(&module_def);
}
