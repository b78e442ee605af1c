/* The customer fold compiled: a C twin of ``fold_python`` in timeline.py.

   Same arguments and result: the state after ``events`` (a new list; the given state is
   not changed), and the events' facts times ``sign`` added to ``facts`` (a timeline.Facts:
   ``points``, a dict of (segment, t) to a list of counts, and ``spans``, a dict of fact
   tuple to count), or no facts when it is None. Counts are Python ints: a sum that leaves 64 bits is added as
   Python adds it. Event fields the Python code would compute with are read as 64-bit
   integers; one that is not (no validated event has one) raises instead.
   tests/test_fold_compiled.py runs both on random histories and compares every result. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum { SIGNUP = 0, CLICK = 1, PURCHASE = 2, SURVEY = 3, CANCELLATION = 4 };

/* The vector's width and positions in it (BASE_INDEX), set once by ``configure``. */
enum {
    L_WIDTH,
    L_NEW,
    L_CHURNED,
    L_ORDERS,
    L_PURCHASING,
    L_REVENUE,
    L_CLICKS,
    L_SPEND,
    L_CONVERTED,
    L_ATTRIBUTED,
    L_NPS,
    L_PROMOTERS,
    L_PASSIVES,
    L_DETRACTORS,
    L_CSAT,
    L_SATISFIED,
    L_IGNORED_CANCEL,
    L_COUNT
};
static Py_ssize_t layout[L_COUNT];
static int configured = 0;
/* The survey thresholds (stream_app/kpis/registry.py), set by ``configure`` too. */
static long long nps_promoter_min, nps_passive_min, csat_satisfied_min;

static PyObject *s_all, *s_region, *s_campaign, *s_act, *s_dp, *s_dr, *s_points, *s_spans;

static inline long long floor_to(long long t, long long grain) {
    long long r = t % grain;
    return t - (r < 0 ? r + grain : r);
}

static int as_ll(PyObject *value, long long *out) {
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "an event field does not fit 64 bits");
        return -1;
    }
    if (*out == -1 && PyErr_Occurred()) return -1;
    return 0;
}

/* ``vector[index] += delta`` for a list of Python ints. */
static int vadd(PyObject *vector, Py_ssize_t index, long long delta) {
    PyObject *item = PyList_GET_ITEM(vector, index);
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(item, &overflow), sum;
    PyObject *result;
    if (value == -1 && !overflow && PyErr_Occurred()) return -1;
    if (!overflow && !__builtin_add_overflow(value, delta, &sum)) {
        result = PyLong_FromLongLong(sum);
    } else {
        PyObject *d = PyLong_FromLongLong(delta);
        if (d == NULL) return -1;
        result = PyNumber_Add(item, d);
        Py_DECREF(d);
    }
    if (result == NULL) return -1;
    PyList_SET_ITEM(vector, index, result);
    Py_DECREF(item);
    return 0;
}

/* ``points[(segment, t)]``, created as zeros when missing; a borrowed reference. */
static PyObject *point(PyObject *points, PyObject *segment, PyObject *t) {
    PyObject *key = PyTuple_Pack(2, segment, t);
    if (key == NULL) return NULL;
    PyObject *vector = PyDict_GetItemWithError(points, key);
    if (vector == NULL && !PyErr_Occurred()) {
        Py_ssize_t width = layout[L_WIDTH];
        vector = PyList_New(width);
        if (vector != NULL) {
            PyObject *zero = PyLong_FromLong(0);
            for (Py_ssize_t i = 0; i < width; i++) {
                Py_INCREF(zero);
                PyList_SET_ITEM(vector, i, zero);
            }
            Py_DECREF(zero);
            int failed = PyDict_SetItem(points, key, vector);
            Py_DECREF(vector); /* the dict holds it */
            if (failed) vector = NULL;
        }
    }
    Py_DECREF(key);
    return vector;
}

/* ``spans[key] = spans.get(key, 0) + delta``; steals ``key``. */
static int span_add(PyObject *spans, PyObject *key, long long delta) {
    if (key == NULL) return -1;
    PyObject *old = PyDict_GetItemWithError(spans, key);
    PyObject *result;
    if (old == NULL) {
        result = PyErr_Occurred() ? NULL : PyLong_FromLongLong(delta);
    } else {
        PyObject *d = PyLong_FromLongLong(delta);
        result = d == NULL ? NULL : PyNumber_Add(old, d);
        Py_XDECREF(d);
    }
    int failed = result == NULL || PyDict_SetItem(spans, key, result) < 0;
    Py_XDECREF(result);
    Py_DECREF(key);
    return failed ? -1 : 0;
}

static PyObject *concat(PyObject *prefix, PyObject *name) { return PyUnicode_Concat(prefix, name); }

static PyObject *fold_impl(PyObject *state, PyObject *events, long long attribution_us,
                           PyObject *points, PyObject *spans, long long sign, long long grain) {
    int with_facts = points != NULL;
    if (!PyList_Check(state) || PyList_GET_SIZE(state) != 5 || !PyList_Check(events)) {
        PyErr_SetString(PyExc_TypeError, "state must be a list of 5, events a list");
        return NULL;
    }
    const Py_ssize_t *L = layout;
    int active = PyObject_IsTrue(PyList_GET_ITEM(state, 0));
    if (active < 0) return NULL;
    PyObject *region = Py_NewRef(PyList_GET_ITEM(state, 1));
    PyObject *campaign = Py_NewRef(PyList_GET_ITEM(state, 2));
    PyObject *click = NULL, *prev = NULL, *by_region = NULL, *result = NULL;
    PyObject *t_floor = NULL, *event = NULL;

    PyObject *old_click = PyList_GET_ITEM(state, 3);
    int has_click = PyObject_IsTrue(old_click);
    if (has_click < 0) goto fail;
    click = has_click ? PySequence_List(old_click) : Py_NewRef(Py_None);
    if (click == NULL) goto fail;
    PyObject *old_prev = PyList_GET_ITEM(state, 4);
    if (!PyDict_Check(old_prev)) {
        PyErr_SetString(PyExc_TypeError, "previous purchases must be a dict");
        goto fail;
    }
    prev = PyDict_New();
    if (prev == NULL) goto fail;
    {
        Py_ssize_t pos = 0;
        PyObject *segment, *times;
        while (PyDict_Next(old_prev, &pos, &segment, &times)) {
            PyObject *copy = PySequence_List(times);
            if (copy == NULL || PyDict_SetItem(prev, segment, copy) < 0) {
                Py_XDECREF(copy);
                goto fail;
            }
            Py_DECREF(copy);
        }
    }
    by_region = concat(s_region, region);
    if (by_region == NULL) goto fail;

    Py_ssize_t count = PyList_GET_SIZE(events);
    for (Py_ssize_t n = 0; n < count; n++) {
        event = PySequence_Fast(PyList_GET_ITEM(events, n), "an event must be a sequence");
        if (event == NULL) goto fail;
        Py_ssize_t size = PySequence_Fast_GET_SIZE(event);
        PyObject **field = PySequence_Fast_ITEMS(event);
        long long t, rank;
        if (size < 3 || as_ll(field[0], &t) < 0 || as_ll(field[1], &rank) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "an event is too short");
            goto fail;
        }
        t_floor = with_facts ? PyLong_FromLongLong(floor_to(t, grain)) : Py_NewRef(Py_None);
        if (t_floor == NULL) goto fail;
        if (rank == CLICK) {
            long long cost;
            if (size < 5 || as_ll(field[4], &cost) < 0) goto short_event;
            if (with_facts) {
                PyObject *by_campaign = concat(s_campaign, field[3]);
                if (by_campaign == NULL) goto fail;
                PyObject *segments[3] = {s_all, by_region, by_campaign};
                for (int i = 0; i < 3; i++) {
                    PyObject *vector = point(points, segments[i], t_floor);
                    if (vector == NULL || vadd(vector, L[L_CLICKS], sign) < 0 ||
                        vadd(vector, L[L_SPEND], sign * cost) < 0) {
                        Py_DECREF(by_campaign);
                        goto fail;
                    }
                }
                Py_DECREF(by_campaign);
            }
            PyObject *new_click = PyList_New(4);
            if (new_click == NULL) goto fail;
            PyList_SET_ITEM(new_click, 0, Py_NewRef(field[0]));
            PyList_SET_ITEM(new_click, 1, Py_NewRef(field[3]));
            PyList_SET_ITEM(new_click, 2, Py_NewRef(region));
            PyList_SET_ITEM(new_click, 3, Py_NewRef(Py_False));
            Py_SETREF(click, new_click);
        } else if (rank == PURCHASE) {
            long long amount;
            if (size < 4 || as_ll(field[3], &amount) < 0) goto short_event;
            amount *= sign;
            PyObject *segments[2] = {s_all, by_region};
            for (int i = 0; i < 2; i++) {
                PyObject *segment = segments[i];
                PyObject *times = PyDict_GetItemWithError(prev, segment);
                if (times == NULL && PyErr_Occurred()) goto fail;
                PyObject *q = Py_None;
                if (times != NULL) {
                    if (!PyList_Check(times) || PyList_GET_SIZE(times) != 2) {
                        PyErr_SetString(PyExc_ValueError, "purchase times must be 2");
                        goto fail;
                    }
                    q = PyList_GET_ITEM(times, 0);
                }
                if (with_facts) {
                    PyObject *vector = point(points, segment, t_floor);
                    if (vector == NULL || vadd(vector, L[L_ORDERS], sign) < 0 ||
                        vadd(vector, L[L_REVENUE], amount) < 0)
                        goto fail;
                    if (times == NULL) {
                        /* The first purchase: a purchasing customer more at its time. */
                        if (vadd(vector, L[L_PURCHASING], sign) < 0) goto fail;
                    } else {
                        long long qv;
                        if (as_ll(q, &qv) < 0) goto fail;
                        PyObject *q_floor = PyLong_FromLongLong(floor_to(qv, grain));
                        if (q_floor == NULL) goto fail;
                        PyObject *q2 = PyList_GET_ITEM(times, 1), *q2_floor;
                        if (q2 == Py_None) {
                            q2_floor = Py_NewRef(Py_None);
                        } else {
                            long long q2v;
                            q2_floor = as_ll(q2, &q2v) < 0
                                           ? NULL
                                           : PyLong_FromLongLong(floor_to(q2v, grain));
                        }
                        int failed =
                            q2_floor == NULL ||
                            span_add(spans, PyTuple_Pack(4, s_dp, segment, t_floor, q_floor),
                                     sign) < 0 ||
                            span_add(spans,
                                     PyTuple_Pack(5, s_dr, segment, t_floor, q_floor, q2_floor),
                                     sign) < 0;
                        Py_DECREF(q_floor);
                        Py_XDECREF(q2_floor);
                        if (failed) goto fail;
                    }
                }
                PyObject *new_times = PyList_New(2);
                if (new_times == NULL) goto fail;
                PyList_SET_ITEM(new_times, 0, Py_NewRef(field[0]));
                PyList_SET_ITEM(new_times, 1, Py_NewRef(q));
                int failed = PyDict_SetItem(prev, segment, new_times) < 0;
                Py_DECREF(new_times);
                if (failed) goto fail;
            }
            if (click != Py_None) {
                if (!PyList_Check(click) || PyList_GET_SIZE(click) < 4) {
                    PyErr_SetString(PyExc_ValueError, "a last click must have 4 fields");
                    goto fail;
                }
                int converted = PyObject_IsTrue(PyList_GET_ITEM(click, 3));
                long long click_t;
                if (converted < 0 || as_ll(PyList_GET_ITEM(click, 0), &click_t) < 0) goto fail;
                if (!converted && t - click_t <= attribution_us) {
                    PyList_SetItem(click, 3, Py_NewRef(Py_True));
                    if (with_facts) {
                        PyObject *at = PyLong_FromLongLong(floor_to(click_t, grain));
                        PyObject *click_region = at ? concat(s_region, PyList_GET_ITEM(click, 2)) : NULL;
                        PyObject *click_campaign =
                            click_region ? concat(s_campaign, PyList_GET_ITEM(click, 1)) : NULL;
                        int failed = click_campaign == NULL;
                        PyObject *segments[3] = {s_all, click_region, click_campaign};
                        for (int i = 0; i < 3 && !failed; i++) {
                            PyObject *vector = point(points, segments[i], at);
                            failed = vector == NULL || vadd(vector, L[L_CONVERTED], sign) < 0 ||
                                     vadd(vector, L[L_ATTRIBUTED], amount) < 0;
                        }
                        Py_XDECREF(at);
                        Py_XDECREF(click_region);
                        Py_XDECREF(click_campaign);
                        if (failed) goto fail;
                    }
                }
            }
        } else if (rank == SURVEY) {
            long long score;
            if (size < 5 || as_ll(field[4], &score) < 0) goto short_event;
            if (with_facts) {
                Py_ssize_t metrics[2];
                int metric_count;
                if (PyUnicode_Check(field[3]) &&
                    PyUnicode_CompareWithASCIIString(field[3], "n") == 0) {
                    metrics[0] = L[L_NPS];
                    metrics[1] = score >= nps_promoter_min  ? L[L_PROMOTERS]
                                 : score >= nps_passive_min ? L[L_PASSIVES]
                                              : L[L_DETRACTORS];
                    metric_count = 2;
                } else {
                    metrics[0] = L[L_CSAT];
                    metrics[1] = L[L_SATISFIED];
                    metric_count = score >= csat_satisfied_min ? 2 : 1;
                }
                PyObject *segments[2] = {s_all, by_region};
                for (int i = 0; i < 2; i++) {
                    PyObject *vector = point(points, segments[i], t_floor);
                    if (vector == NULL) goto fail;
                    for (int m = 0; m < metric_count; m++)
                        if (vadd(vector, metrics[m], sign) < 0) goto fail;
                }
            }
        } else if (rank == SIGNUP) {
            if (!active) {
                if (size < 5) goto short_event;
                active = 1;
                Py_SETREF(region, Py_NewRef(field[3]));
                Py_SETREF(campaign, Py_NewRef(field[4]));
                Py_SETREF(by_region, concat(s_region, region));
                if (by_region == NULL) goto fail;
                if (with_facts) {
                    PyObject *by_campaign =
                        campaign == Py_None ? NULL : concat(s_campaign, campaign);
                    if (campaign != Py_None && by_campaign == NULL) goto fail;
                    PyObject *segments[3] = {s_all, by_region, by_campaign};
                    int failed = 0;
                    for (int i = 0; i < (by_campaign ? 3 : 2) && !failed; i++) {
                        PyObject *vector = point(points, segments[i], t_floor);
                        failed = vector == NULL || vadd(vector, L[L_NEW], sign) < 0;
                    }
                    Py_XDECREF(by_campaign);
                    for (int i = 0; i < 2 && !failed; i++)
                        failed = span_add(spans, PyTuple_Pack(3, s_act, segments[i], t_floor),
                                          sign) < 0;
                    if (failed) goto fail;
                }
            }
        } else if (rank == CANCELLATION) {
            int was_active = active;
            active = 0;
            if (with_facts) {
                PyObject *segments[2] = {s_all, by_region};
                for (int i = 0; i < 2; i++) {
                    PyObject *vector = point(points, segments[i], t_floor);
                    if (vector == NULL) goto fail;
                    if (!was_active) {
                        /* Ignored, but an event of its segments (fold_python says why). */
                        if (vadd(vector, L[L_IGNORED_CANCEL], sign) < 0) goto fail;
                    } else if (vadd(vector, L[L_CHURNED], sign) < 0 ||
                               span_add(spans, PyTuple_Pack(3, s_act, segments[i], t_floor),
                                        -sign) < 0)
                        goto fail;
                }
            }
        }
        Py_CLEAR(t_floor);
        Py_CLEAR(event);
        continue;
    short_event:
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_IndexError, "an event is too short");
        goto fail;
    }
    result = PyList_New(5);
    if (result == NULL) goto fail;
    PyList_SET_ITEM(result, 0, Py_NewRef(active ? Py_True : Py_False));
    PyList_SET_ITEM(result, 1, region);
    PyList_SET_ITEM(result, 2, campaign);
    PyList_SET_ITEM(result, 3, click);
    PyList_SET_ITEM(result, 4, prev);
    Py_DECREF(by_region);
    return result;

fail:
    Py_XDECREF(event);
    Py_XDECREF(t_floor);
    Py_XDECREF(region);
    Py_XDECREF(campaign);
    Py_XDECREF(click);
    Py_XDECREF(prev);
    Py_XDECREF(by_region);
    return NULL;
}

static PyObject *fold(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 3 || nargs > 6) {
        PyErr_SetString(PyExc_TypeError,
                        "fold(state, events, attribution_us, facts=None, sign=1, grain_us=1)");
        return NULL;
    }
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "_fold.configure was not called");
        return NULL;
    }
    long long attribution_us, sign = 1, grain = 1;
    if (as_ll(args[2], &attribution_us) < 0 || (nargs > 4 && as_ll(args[4], &sign) < 0) ||
        (nargs > 5 && as_ll(args[5], &grain) < 0))
        return NULL;
    if (grain <= 0) {
        PyErr_SetString(PyExc_ValueError, "grain_us must be positive");
        return NULL;
    }
    PyObject *facts = nargs > 3 ? args[3] : Py_None;
    if (facts == Py_None)
        return fold_impl(args[0], args[1], attribution_us, NULL, NULL, sign, grain);
    /* A timeline.Facts: its points (a dict, a defaultdict in practice) and spans. */
    PyObject *points = PyObject_GetAttr(facts, s_points);
    PyObject *spans = points ? PyObject_GetAttr(facts, s_spans) : NULL;
    PyObject *result = NULL;
    if (spans != NULL && (!PyDict_Check(points) || !PyDict_Check(spans)))
        PyErr_SetString(PyExc_TypeError, "facts.points and facts.spans must be dicts");
    else if (spans != NULL)
        result = fold_impl(args[0], args[1], attribution_us, points, spans, sign, grain);
    Py_XDECREF(points);
    Py_XDECREF(spans);
    return result;
}

/* The BASE_COUNTS names of the positions after L_WIDTH, in enum order. */
static const char *const LAYOUT_NAMES[L_COUNT] = {
    NULL, "new_customers", "churned_customers", "orders", "purchasing_customers",
    "revenue_micros", "clicks", "spend_micros", "converted_clicks",
    "attributed_revenue_micros", "nps_responses", "promoters", "passives", "detractors",
    "csat_responses", "csat_satisfied", "ignored_cancellations",
};

static PyObject *configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyDict_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(base_index: dict[str, int], nps_promoter_min: int, "
                        "nps_passive_min: int, csat_satisfied_min: int)");
        return NULL;
    }
    long long thresholds[3];
    for (int i = 0; i < 3; i++) {
        thresholds[i] = PyLong_AsLongLong(args[1 + i]);
        if (thresholds[i] == -1 && PyErr_Occurred()) return NULL;
    }
    Py_ssize_t values[L_COUNT];
    values[L_WIDTH] = PyDict_GET_SIZE(args[0]);
    for (int i = 1; i < L_COUNT; i++) {
        PyObject *position = PyDict_GetItemString(args[0], LAYOUT_NAMES[i]);
        if (position == NULL) {
            PyErr_Format(PyExc_KeyError, "%s", LAYOUT_NAMES[i]);
            return NULL;
        }
        values[i] = PyLong_AsSsize_t(position);
        if (values[i] == -1 && PyErr_Occurred()) return NULL;
        if (values[i] < 0 || values[i] >= values[L_WIDTH]) {
            PyErr_SetString(PyExc_ValueError, "a position outside the vector");
            return NULL;
        }
    }
    memcpy(layout, values, sizeof layout);
    nps_promoter_min = thresholds[0];
    nps_passive_min = thresholds[1];
    csat_satisfied_min = thresholds[2];
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fold", (PyCFunction)(void (*)(void))fold, METH_FASTCALL,
     "fold(state, events, attribution_us, facts=None, sign=1, grain_us=1)\n--\n\n"
     "The state after events; their facts times sign added to facts (a timeline.Facts)."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(base_index, nps_promoter_min, nps_passive_min, csat_satisfied_min)\n--\n\n"
     "The positions of the counts in a vector (BASE_INDEX, name to position) and the survey\n"
     "score thresholds of the KPI registry."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_fold", "The customer fold, compiled.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fold(void) {
    s_all = PyUnicode_InternFromString("all");
    s_region = PyUnicode_InternFromString("region:");
    s_campaign = PyUnicode_InternFromString("campaign:");
    s_act = PyUnicode_InternFromString("act");
    s_dp = PyUnicode_InternFromString("dp");
    s_dr = PyUnicode_InternFromString("dr");
    s_points = PyUnicode_InternFromString("points");
    s_spans = PyUnicode_InternFromString("spans");
    if (!s_points || !s_spans) return NULL;
    if (!s_all || !s_region || !s_campaign || !s_act || !s_dp || !s_dr) return NULL;
    return PyModule_Create(&module_def);
}
