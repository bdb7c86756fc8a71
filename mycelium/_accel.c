/* Compiled fast paths of the ingest pipeline (docs/accel.md).
 *
 * Each function is a faster twin of Python code that stays the reference (the table in
 * docs/accel.md pairs them): envelope decoding, sorting a batch into linked runs,
 * decrypting and checking payloads, the LWW merge, and reading and writing stored
 * document states with their index rows.
 *
 * Contract: each returns the very objects the Python path would build, or None when it
 * is not sure (anything unusual: non-canonical input, a shape error, a failed
 * decryption, a value type it does not handle). None never means "invalid": the caller
 * then runs the Python path, which decides and names the error. So this file only has
 * to be right about what it accepts; tests pin that against the Python path on random
 * and mutated inputs.
 *
 * No crypto is implemented here. SHA-256 is hashlib's (OpenSSL through its EVP API, the
 * very code the Python path hashes with), called through the constructor accel.py hands
 * to configure(); XChaCha20-Poly1305 is the libsodium PyNaCl ships, called through the
 * function's address taken with cffi's ffi.addressof. accel.py checks both with
 * known-answer tests before handing out any compiled function, and the build needs
 * nothing but a C compiler and the Python headers.
 *
 * Inputs come from untrusted peers (envelopes, payloads) and from our own code (types,
 * descriptors, dicts): the first are parsed with bounds checks on every read, the second
 * are type-checked where a wrong one could corrupt memory (docs/accel.md, threat model).
 * assert() marks invariants; the sanitizer job (scripts/sanitize.py) builds with them on.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* libsodium's crypto_aead_xchacha20poly1305_ietf_decrypt */
typedef int (*aead_decrypt_fn)(unsigned char *m, unsigned long long *mlen_p, unsigned char *nsec,
                               const unsigned char *c, unsigned long long clen,
                               const unsigned char *ad, unsigned long long adlen,
                               const unsigned char *npub, const unsigned char *k);

/* -- configuration (set once by configure()) ------------------------------------------ */
static PyObject *sha256_new, *digest_name; /* hashlib.sha256 and "digest" */
static aead_decrypt_fn aead_decrypt;
static PyTypeObject *envelope_type, *payload_type, *op_type, *timestamp_type;
#define N_ENV_FIELDS 12 /* kind space author seq prev epoch nonce ct sig v raw _id */
static PyObject *env_setters[N_ENV_FIELDS];
static PyObject *kind_data, *kind_control, *version_obj;
static PyTypeObject *doc_state_type; /* DocState and its slot descriptors: fields, tomb */
static PyObject *doc_setters[2];
static PyObject *int_zero, *int_one; /* the docs table's live column */
static Py_ssize_t max_envelope, max_payload, max_ops, max_coll, max_doc, max_field;
static Py_ssize_t max_node;
static unsigned long long max_counter;

#define NONCE_BYTES 24
#define TAG_BYTES 16
#define KEY_BYTES 32

/* -- reading CBOR --------------------------------------------------------------------- */
typedef struct {
    const uint8_t *p, *end;
} reader;

/* Read one head: major type and argument. strict: shortest form only (canonical).
 * Returns 0 on success, -1 if malformed, indefinite, or (strict) wider than needed. */
static int read_head(reader *r, int *major, uint64_t *arg, int strict) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    int ai = b & 0x1f;
    *major = b >> 5;
    if (ai < 24) {
        *arg = ai;
        return 0;
    }
    int width = ai == 24 ? 1 : ai == 25 ? 2 : ai == 26 ? 4 : ai == 27 ? 8 : 0;
    if (width == 0 || r->end - r->p < width) return -1;
    uint64_t v = 0;
    for (int i = 0; i < width; i++) v = (v << 8) | r->p[i];
    r->p += width;
    if (strict) {
        uint64_t least = width == 1 ? 24 : width == 2 ? 0x100 : width == 4 ? 0x10000
                                                                           : 0x100000000ULL;
        if (v < least) return -1;
    }
    *arg = v;
    return 0;
}

/* A byte or text string of the given major type: pointer and length into the input. */
static int read_span(reader *r, int want_major, const uint8_t **s, Py_ssize_t *n, int strict) {
    int major;
    uint64_t len;
    if (read_head(r, &major, &len, strict) < 0 || major != want_major) return -1;
    if (len > (uint64_t)(r->end - r->p)) return -1;
    *s = r->p;
    *n = (Py_ssize_t)len;
    r->p += len;
    return 0;
}

/* Exactly these bytes next (a fixed key or a fixed-width head). */
static int expect(reader *r, const char *bytes, Py_ssize_t n) {
    if (r->end - r->p < n || memcmp(r->p, bytes, n) != 0) return -1;
    r->p += n;
    return 0;
}

/* expect() for a string literal (its length without the terminating NUL) */
#define EXPECT(r, lit) expect((r), (lit), (Py_ssize_t)sizeof(lit) - 1)

static int read_uint(reader *r, uint64_t *v, int strict) {
    int major;
    if (read_head(r, &major, v, strict) < 0 || major != 0) return -1;
    return 0;
}

/* Exactly 32 bytes as a canonical byte string (head 0x58 0x20). */
static int read_b32(reader *r, const uint8_t **s) {
    if (EXPECT(r, "\x58\x20") < 0 || r->end - r->p < 32) return -1;
    *s = r->p;
    r->p += 32;
    return 0;
}

/* A non-negative int as int64, or -1 if it is not one (no exception left set).
 * PyLong_AsLongLongAndOverflow: CPython 3.11's PyLong_AsLongLong takes a slow byte-array
 * path for every value above 2**30, which wall clocks and sequence numbers are. */
static long long small_uint(PyObject *v) {
    int overflow;
    if (!PyLong_CheckExact(v)) return -1;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) PyErr_Clear();
    return overflow || x < 0 ? -1 : x;
}

/* Whether two exact str objects hold the same text (cheaper than PyUnicode_Compare). */
static int same_text(PyObject *a, PyObject *b) {
    if (a == b) return 1;
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b)
           && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * PyUnicode_KIND(a)) == 0;
}

/* -- the envelope's layout ------------------------------------------------------------ */
typedef struct {
    int kind;
    uint64_t seq, epoch;
    const uint8_t *ct, *sig, *prev, *nonce, *space, *author;
    Py_ssize_t ct_len, nonce_len;
    /* spans of the raw bytes that the AAD is cut from */
    const uint8_t *seq_at, *seq_end, *kind_at, *epoch_end;
} layout;

/* Parse the canonical envelope (keys in canonical order, shortest heads, shape rules of
 * envelope._shape_problem). 0 if it is exactly such an envelope, else -1. */
static int parse_envelope(const uint8_t *data, Py_ssize_t n, layout *e) {
    reader r = {data, data + n};
    uint64_t kind;
    if (n > max_envelope) return -1;
    if (EXPECT(&r, "\xaa\x61v\x01\x62" "ct") < 0) return -1;
    if (read_span(&r, 2, &e->ct, &e->ct_len, 1) < 0) return -1;
    if (EXPECT(&r, "\x63seq") < 0) return -1;
    e->seq_at = r.p - 4;
    if (read_uint(&r, &e->seq, 1) < 0 || e->seq < 1) return -1;
    e->seq_end = r.p;
    if (EXPECT(&r, "\x63sig\x58\x40") < 0 || r.end - r.p < 64) return -1;
    e->sig = r.p;
    r.p += 64;
    e->kind_at = r.p;
    if (EXPECT(&r, "\x64kind") < 0 || read_uint(&r, &kind, 1) < 0 || kind > 1) return -1;
    e->kind = (int)kind;
    if (EXPECT(&r, "\x64prev") < 0) return -1;
    if (r.p < r.end && *r.p == 0xf6) {
        e->prev = NULL;
        r.p++;
    } else if (read_b32(&r, &e->prev) < 0) {
        return -1;
    }
    if (EXPECT(&r, "\x65" "epoch") < 0 || read_uint(&r, &e->epoch, 1) < 0) return -1;
    e->epoch_end = r.p;
    if (EXPECT(&r, "\x65nonce") < 0) return -1;
    if (read_span(&r, 2, &e->nonce, &e->nonce_len, 1) < 0) return -1;
    if (EXPECT(&r, "\x65space") < 0 || read_b32(&r, &e->space) < 0) return -1;
    if (EXPECT(&r, "\x66" "author") < 0 || read_b32(&r, &e->author) < 0) return -1;
    if (r.p != r.end) return -1;
    if ((e->seq == 1) != (e->prev == NULL)) return -1;
    if (e->kind == 0) {
        if (e->nonce_len != NONCE_BYTES || e->ct_len < TAG_BYTES) return -1;
    } else if (e->nonce_len != 0) {
        return -1;
    }
    return 0;
}

/* -- small object helpers ------------------------------------------------------------- */
/* The last space and author seen: a batch repeats them, so they are shared, not copied. */
static PyObject *last_space, *last_author;

/* The same for integers: a batch shares its epoch, a document's entries their wall clock. */
typedef struct {
    PyObject *obj;
    uint64_t value;
} shared_int;

static PyObject *shared_uint(shared_int *last, uint64_t v) {
    if (v < 256) return PyLong_FromUnsignedLongLong(v); /* CPython's own small ints */
    if (last->obj != NULL && last->value == v) return Py_NewRef(last->obj);
    PyObject *n = PyLong_FromUnsignedLongLong(v);
    if (n != NULL) {
        Py_XSETREF(last->obj, Py_NewRef(n));
        last->value = v;
    }
    return n;
}

/* ... and for short byte strings (the hlc node of a writer). */
static PyObject *shared_bytes(PyObject **last, const uint8_t *s, Py_ssize_t n) {
    if (*last != NULL && PyBytes_GET_SIZE(*last) == n && memcmp(PyBytes_AS_STRING(*last), s, n) == 0)
        return Py_NewRef(*last);
    PyObject *b = PyBytes_FromStringAndSize((const char *)s, n);
    if (b != NULL) Py_XSETREF(*last, Py_NewRef(b));
    return b;
}

static shared_int last_epoch, last_wall;
static PyObject *last_node;

static PyObject *shared_b32(PyObject **last, const uint8_t *s) {
    if (*last != NULL && memcmp(PyBytes_AS_STRING(*last), s, 32) == 0) {
        Py_INCREF(*last);
        return *last;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)s, 32);
    if (b == NULL) return NULL;
    Py_XSETREF(*last, Py_NewRef(b));
    return b;
}

/* Field names, collection names and the hex stamps of stored states repeat in every
 * delta: one str object each (its hash then computed once, and no new allocation), from a
 * small direct-mapped cache keyed by the UTF-8 bytes. A miss only replaces the slot. */
#define NAME_SLOTS 256
#define NAME_MAX_BYTES 64
static PyObject *name_cache[NAME_SLOTS];

static PyObject *text_of(const uint8_t *s, Py_ssize_t n, int cached) {
    if (!cached || n == 0 || n > NAME_MAX_BYTES)
        return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    unsigned slot = ((unsigned)n * 31u + s[0] * 7u + s[n / 2] * 3u + s[n - 1]) % NAME_SLOTS;
    PyObject *hit = name_cache[slot];
    if (hit != NULL) {
        Py_ssize_t len;
        const char *u = PyUnicode_AsUTF8AndSize(hit, &len);
        if (u != NULL && len == n && memcmp(u, s, n) == 0) return Py_NewRef(hit);
    }
    PyObject *str = PyUnicode_DecodeUTF8((const char *)s, n, "strict");
    if (str == NULL) return NULL;
    Py_XSETREF(name_cache[slot], Py_NewRef(str));
    return str;
}

/* A tuple subclass instance (NamedTuple) from stolen references, as tuple.__new__ builds.
 * type must be a tuple subclass (configure and doc_rows check it). */
static PyObject *named_tuple(PyTypeObject *type, Py_ssize_t n, PyObject **items) {
    assert(PyType_FastSubclass(type, Py_TPFLAGS_TUPLE_SUBCLASS));
    PyObject *t = type->tp_alloc(type, n);
    if (t == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
    return t;
}

/* SHA-256 of a bytes object as a new 32-byte bytes object, or NULL with an exception:
 * hashlib.sha256(data).digest(), so the same OpenSSL code (and providers) as Python's. */
static PyObject *sha256(PyObject *data) {
    assert(sha256_new != NULL && PyBytes_Check(data));
    PyObject *h = PyObject_CallOneArg(sha256_new, data);
    PyObject *d = h != NULL ? PyObject_CallMethodNoArgs(h, digest_name) : NULL;
    Py_XDECREF(h);
    if (d != NULL && !(PyBytes_CheckExact(d) && PyBytes_GET_SIZE(d) == 32)) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_ValueError, "sha256 digest is not 32 bytes");
        return NULL;
    }
    return d;
}

/* Envelope field i (in dataclass field order) of env, as a new reference. */
static PyObject *slot_get(int i, PyObject *env) {
    PyObject *d = env_setters[i];
    return Py_TYPE(d)->tp_descr_get(d, env, (PyObject *)envelope_type);
}

/* -- decode_envelope ------------------------------------------------------------------ */
static PyObject *envelope_of(PyObject *data, const layout *parsed);

static PyObject *decode_envelope(PyObject *Py_UNUSED(module), PyObject *data) {
    layout e;
    if (envelope_type == NULL || !PyBytes_CheckExact(data)) Py_RETURN_NONE;
    if (parse_envelope((const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &e) < 0)
        Py_RETURN_NONE;
    return envelope_of(data, &e);
}

/* The Envelope of canonical bytes data already parsed into e (None if out of memory). */
static PyObject *envelope_of(PyObject *data, const layout *parsed) {
    const layout e = *parsed;
    PyObject *v[N_ENV_FIELDS];
    v[0] = Py_NewRef(e.kind == 0 ? kind_data : kind_control);
    v[1] = shared_b32(&last_space, e.space);
    v[2] = shared_b32(&last_author, e.author);
    v[3] = PyLong_FromUnsignedLongLong(e.seq);
    v[4] = e.prev == NULL ? Py_NewRef(Py_None)
                          : PyBytes_FromStringAndSize((const char *)e.prev, 32);
    v[5] = shared_uint(&last_epoch, e.epoch);
    v[6] = PyBytes_FromStringAndSize((const char *)e.nonce, e.nonce_len);
    v[7] = PyBytes_FromStringAndSize((const char *)e.ct, e.ct_len);
    v[8] = PyBytes_FromStringAndSize((const char *)e.sig, 64);
    v[9] = Py_NewRef(version_obj);
    v[10] = Py_NewRef(data);
    v[11] = sha256(data); /* delta_id */
    PyObject *env = NULL;
    int ok = 1;
    for (int i = 0; i < N_ENV_FIELDS; i++) ok &= v[i] != NULL;
    if (ok) env = envelope_type->tp_alloc(envelope_type, 0);
    for (int i = 0; i < N_ENV_FIELDS; i++) {
        if (env != NULL) {
            PyObject *d = env_setters[i];
            if (Py_TYPE(d)->tp_descr_set(d, env, v[i]) < 0) Py_CLEAR(env);
        }
        Py_XDECREF(v[i]);
    }
    if (env == NULL) {
        if (getenv("ACCEL_DEBUG")) PyErr_Print();
        PyErr_Clear(); /* the Python path retries and raises whatever is real */
        Py_RETURN_NONE;
    }
    return env;
}

/* -- chain_runs ----------------------------------------------------------------------- */

PyDoc_STRVAR(chain_runs_doc,
"chain_runs(raws, space, heads) -> list[list[Envelope]] | None\n\n"
"The common batch: every envelope decodes, names space, and each author's envelopes\n"
"come in ascending seq, extending heads[author] = (seq, delta_id) (or nothing held)\n"
"contiguously, each prev the id of the one before. Then one linked run per author, in\n"
"order of first appearance (validate_batch's ready list, signatures not yet checked);\n"
"otherwise None and validate_batch sorts the batch out.");

static PyObject *chain_runs(PyObject *Py_UNUSED(module), PyObject *const *args,
                            Py_ssize_t nargs) {
    if (nargs != 3 || !(PyList_CheckExact(args[0]) || PyTuple_CheckExact(args[0]))
        || !PyBytes_CheckExact(args[1]) || !PyDict_CheckExact(args[2])
        || PyBytes_GET_SIZE(args[1]) != 32 || envelope_type == NULL)
        Py_RETURN_NONE;
    PyObject *heads = args[2];
    /* a snapshot: hashing a large envelope releases the GIL (hashlib), and another thread
     * could change a list meanwhile; the tuple keeps every item alive and in place */
    PyObject *batch = PySequence_Tuple(args[0]);
    const char *space = PyBytes_AS_STRING(args[1]);
    PyObject *runs = PyList_New(0), *by_author = PyDict_New();
    if (batch == NULL || runs == NULL || by_author == NULL) goto defer;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(batch); i++) {
        PyObject *raw = PyTuple_GET_ITEM(batch, i);
        layout e;
        if (!PyBytes_CheckExact(raw)
            || parse_envelope((const uint8_t *)PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), &e) < 0
            || memcmp(e.space, space, 32) != 0)
            goto defer;
        PyObject *env = envelope_of(raw, &e);
        if (env == NULL || env == Py_None) {
            Py_XDECREF(env);
            goto defer;
        }
        PyObject *author = slot_get(2, env);
        PyObject *run = author ? PyDict_GetItemWithError(by_author, author) : NULL;
        int ok = author != NULL && !PyErr_Occurred();
        if (ok && run == NULL) { /* first envelope of this author: must extend its head */
            PyObject *head = PyDict_GetItemWithError(heads, author);
            uint64_t head_seq = 0;
            const char *head_id = NULL;
            if (head != NULL) {
                ok = PyTuple_CheckExact(head) && PyTuple_GET_SIZE(head) == 2
                     && PyLong_CheckExact(PyTuple_GET_ITEM(head, 0))
                     && PyBytes_CheckExact(PyTuple_GET_ITEM(head, 1))
                     && PyBytes_GET_SIZE(PyTuple_GET_ITEM(head, 1)) == 32;
                if (ok) {
                    long long held = small_uint(PyTuple_GET_ITEM(head, 0));
                    head_seq = held < 0 ? UINT64_MAX : (uint64_t)held; /* unknown: no match */
                    head_id = PyBytes_AS_STRING(PyTuple_GET_ITEM(head, 1));
                    ok = !PyErr_Occurred();
                }
            } else {
                ok = !PyErr_Occurred();
            }
            ok = ok && e.seq == head_seq + 1
                 && (head_id == NULL ? e.prev == NULL
                                     : e.prev != NULL && memcmp(e.prev, head_id, 32) == 0);
            run = ok ? PyList_New(0) : NULL;
            ok = run != NULL && PyDict_SetItem(by_author, author, run) == 0
                 && PyList_Append(runs, run) == 0;
            Py_XDECREF(run); /* held by by_author and runs */
        } else if (ok) { /* must follow the author's previous envelope in this batch */
            PyObject *last = PyList_GET_ITEM(run, PyList_GET_SIZE(run) - 1);
            PyObject *seq = slot_get(3, last), *id = slot_get(11, last);
            long long last_seq = seq != NULL ? small_uint(seq) : -1;
            ok = last_seq >= 0 && id != NULL && PyBytes_CheckExact(id) && PyBytes_GET_SIZE(id) == 32
                 && e.seq == (uint64_t)last_seq + 1
                 && e.prev != NULL && memcmp(e.prev, PyBytes_AS_STRING(id), 32) == 0;
            Py_XDECREF(seq);
            Py_XDECREF(id);
        }
        ok = ok && PyList_Append(run, env) == 0;
        Py_XDECREF(author);
        Py_DECREF(env);
        if (!ok) goto defer;
    }
    Py_DECREF(by_author);
    Py_DECREF(batch);
    return runs;
defer:
    Py_XDECREF(batch);
    Py_XDECREF(runs);
    Py_XDECREF(by_author);
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* -- payload values ------------------------------------------------------------------- */
static double half_to_double(unsigned h) {
    unsigned exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = ldexp((double)mant, -24);
    else if (exp != 31)
        v = ldexp((double)(mant + 1024), (int)exp - 25);
    else
        v = mant == 0 ? Py_HUGE_VAL : Py_NAN;
    return (h & 0x8000) ? -v : v;
}

/* One scalar value as cbor2 decodes it; NULL if it is something else (or malformed).
 * cache_text: short strings through the name cache, integers shared with the last one
 * (stamps repeat the same author, node and wall clock in every entry; ops the same
 * statuses and places). */
static PyObject *read_scalar_text(reader *r, int cache_text) {
    if (r->p >= r->end) return NULL;
    uint8_t b = *r->p;
    int major;
    uint64_t arg;
    const uint8_t *s;
    Py_ssize_t n;
    switch (b >> 5) {
    case 0:
        if (read_head(r, &major, &arg, 0) < 0) return NULL;
        return cache_text ? shared_uint(&last_wall, arg) : PyLong_FromUnsignedLongLong(arg);
    case 1:
        if (read_head(r, &major, &arg, 0) < 0 || arg > (uint64_t)INT64_MAX) return NULL;
        return PyLong_FromLongLong(-1 - (long long)arg);
    case 2:
        if (read_span(r, 2, &s, &n, 0) < 0) return NULL;
        return PyBytes_FromStringAndSize((const char *)s, n);
    case 3:
        if (read_span(r, 3, &s, &n, 0) < 0) return NULL;
        return text_of(s, n, cache_text);
    case 7:
        break;
    default:
        return NULL; /* arrays, maps, tags: the Python path */
    }
    r->p++;
    switch (b) {
    case 0xf4: return Py_NewRef(Py_False);
    case 0xf5: return Py_NewRef(Py_True);
    case 0xf6: return Py_NewRef(Py_None);
    case 0xf9:
        if (r->end - r->p < 2) return NULL;
        r->p += 2;
        return PyFloat_FromDouble(half_to_double(((unsigned)r->p[-2] << 8) | r->p[-1]));
    case 0xfa: {
        if (r->end - r->p < 4) return NULL;
        uint32_t bits = 0;
        for (int i = 0; i < 4; i++) bits = (bits << 8) | r->p[i];
        r->p += 4;
        float f;
        memcpy(&f, &bits, 4);
        return PyFloat_FromDouble((double)f);
    }
    case 0xfb: {
        if (r->end - r->p < 8) return NULL;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) bits = (bits << 8) | r->p[i];
        r->p += 8;
        double d;
        memcpy(&d, &bits, 8);
        return PyFloat_FromDouble(d);
    }
    default:
        return NULL; /* undefined and other simple values */
    }
}

/* A text key, as a span (keys are compared as UTF-8 bytes, which equal strings share). */
static int read_key(reader *r, const uint8_t **s, Py_ssize_t *n) {
    return read_span(r, 3, s, n, 0);
}

static int key_is(const uint8_t *s, Py_ssize_t n, const char *want) {
    return (Py_ssize_t)strlen(want) == n && memcmp(s, want, n) == 0;
}

/* A name as decode_payload accepts it: 1..max_chars characters, all printable if asked
 * (collection and document id; field names need not be). */
static PyObject *read_name(reader *r, Py_ssize_t max_chars, int cached, int printable) {
    const uint8_t *s;
    Py_ssize_t n;
    if (read_span(r, 3, &s, &n, 0) < 0 || n == 0) return NULL;
    PyObject *str = text_of(s, n, cached);
    if (str == NULL) return NULL;
    Py_ssize_t len = PyUnicode_GET_LENGTH(str);
    int kind = PyUnicode_KIND(str);
    const void *data = PyUnicode_DATA(str);
    int ok = len > 0 && len <= max_chars;
    for (Py_ssize_t i = 0; ok && printable && i < len; i++)
        ok = Py_UNICODE_ISPRINTABLE(PyUnicode_READ(kind, data, i));
    if (!ok) Py_CLEAR(str);
    return str;
}

/* [wall_ms, counter, node] as Timestamp.from_wire accepts it. */
static PyObject *read_hlc(reader *r) {
    int major;
    uint64_t n, wall, counter;
    const uint8_t *node;
    Py_ssize_t node_len;
    if (read_head(r, &major, &n, 0) < 0 || major != 4 || n != 3) return NULL;
    if (read_uint(r, &wall, 0) < 0 || wall >= (1ULL << 63)) return NULL;
    if (read_uint(r, &counter, 0) < 0 || counter > max_counter) return NULL;
    if (read_span(r, 2, &node, &node_len, 0) < 0 || node_len > max_node) return NULL;
    PyObject *items[3] = {PyLong_FromUnsignedLongLong(wall), PyLong_FromUnsignedLongLong(counter),
                          shared_bytes(&last_node, node, node_len)};
    if (items[0] == NULL || items[1] == NULL || items[2] == NULL) {
        for (int i = 0; i < 3; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    return named_tuple(timestamp_type, 3, items);
}

/* One op map. Sets *name_span for the duplicate check; *doc_delete for {"del": true}. */
static PyObject *read_op(reader *r, const uint8_t **name_s, Py_ssize_t *name_n, int *doc_delete) {
    int major;
    uint64_t pairs;
    if (read_head(r, &major, &pairs, 0) < 0 || major != 5 || pairs < 1 || pairs > 2) return NULL;
    PyObject *name = NULL, *value = NULL;
    int has_del = 0, has_value = 0;
    *doc_delete = 0;
    for (uint64_t i = 0; i < pairs; i++) {
        const uint8_t *k;
        Py_ssize_t kn;
        if (read_key(r, &k, &kn) < 0) goto fail;
        if (key_is(k, kn, "field") && name == NULL) {
            if ((name = read_name(r, max_field, 1, 0)) == NULL) goto fail;
        } else if (key_is(k, kn, "del") && !has_del) {
            if (r->p >= r->end || *r->p != 0xf5) goto fail;
            r->p++;
            has_del = 1;
        } else if (key_is(k, kn, "value") && !has_value) {
            value = read_scalar_text(r, 1); /* statuses, places, units repeat */
            if (value == NULL) goto fail;
            has_value = 1;
        } else {
            goto fail;
        }
    }
    if (pairs == 1) {
        if (!has_del) goto fail;
        *doc_delete = 1;
        PyObject *items[3] = {Py_NewRef(Py_None), Py_NewRef(Py_None), Py_NewRef(Py_True)};
        return named_tuple(op_type, 3, items);
    }
    if (name == NULL || has_del == has_value) goto fail;
    {
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(name, &n);
        if (u == NULL) goto fail;
        *name_s = (const uint8_t *)u;
        *name_n = n;
    }
    PyObject *items[3] = {name, has_value ? value : Py_NewRef(Py_None),
                          Py_NewRef(has_value ? Py_False : Py_True)};
    return named_tuple(op_type, 3, items);
fail:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return NULL;
}

static PyObject *read_ops(reader *r) {
    int major;
    uint64_t n;
    if (read_head(r, &major, &n, 0) < 0 || major != 4 || n < 1 || n > (uint64_t)max_ops)
        return NULL;
    PyObject *ops = PyTuple_New((Py_ssize_t)n);
    if (ops == NULL) return NULL;
    const uint8_t *names[256];
    Py_ssize_t lens[256];
    for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
        int doc_delete;
        PyObject *op = read_op(r, &names[i], &lens[i], &doc_delete);
        if (op == NULL || (doc_delete && n != 1)) {
            Py_XDECREF(op);
            Py_DECREF(ops);
            return NULL;
        }
        PyTuple_SET_ITEM(ops, i, op);
        if (doc_delete) continue;
        for (Py_ssize_t j = 0; j < i; j++) {
            if (lens[j] == lens[i] && memcmp(names[j], names[i], lens[i]) == 0) {
                Py_DECREF(ops); /* a field twice */
                return NULL;
            }
        }
    }
    return ops;
}

/* The payload map {coll, doc, ops, hlc} (keys in any order, each once). */
static PyObject *read_payload(const uint8_t *data, Py_ssize_t n) {
    reader r = {data, data + n};
    int major;
    uint64_t pairs;
    PyObject *coll = NULL, *doc = NULL, *ops = NULL, *hlc = NULL;
    if (n > max_payload) return NULL;
    if (read_head(&r, &major, &pairs, 0) < 0 || major != 5 || pairs != 4) return NULL;
    for (int i = 0; i < 4; i++) {
        const uint8_t *k;
        Py_ssize_t kn;
        if (read_key(&r, &k, &kn) < 0) goto fail;
        if (key_is(k, kn, "coll") && coll == NULL) {
            if ((coll = read_name(&r, max_coll, 1, 1)) == NULL) goto fail;
        } else if (key_is(k, kn, "doc") && doc == NULL) {
            if ((doc = read_name(&r, max_doc, 0, 1)) == NULL) goto fail;
        } else if (key_is(k, kn, "ops") && ops == NULL) {
            if ((ops = read_ops(&r)) == NULL) goto fail;
        } else if (key_is(k, kn, "hlc") && hlc == NULL) {
            if ((hlc = read_hlc(&r)) == NULL) goto fail;
        } else {
            goto fail;
        }
    }
    if (r.p != r.end) goto fail;
    PyObject *items[4] = {coll, doc, ops, hlc};
    return named_tuple(payload_type, 4, items);
fail:
    Py_XDECREF(coll);
    Py_XDECREF(doc);
    Py_XDECREF(ops);
    Py_XDECREF(hlc);
    return NULL;
}

/* -- schema ------------------------------------------------------------------------- */
/* Whether value fits a field spec (code, max_chars, minimum, maximum, choices) as
 * FieldSpec.problem judges it: 1 yes, 0 no or unsure. Codes: 0 text, 1 int, 2 number,
 * 3 bool (mycelium/crdt/schema.py, Registry.compiled). */
static int value_fits(PyObject *spec, PyObject *value) {
    if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 5) return 0;
    long code = PyLong_AsLong(PyTuple_GET_ITEM(spec, 0));
    PyObject *minimum = PyTuple_GET_ITEM(spec, 2), *maximum = PyTuple_GET_ITEM(spec, 3);
    PyObject *choices = PyTuple_GET_ITEM(spec, 4);
    if (code == 0) {
        Py_ssize_t max_chars = PyLong_AsSsize_t(PyTuple_GET_ITEM(spec, 1));
        if (!PyUnicode_CheckExact(value) || max_chars < 0) return 0;
        if (PyUnicode_GET_LENGTH(value) > max_chars) return 0;
        return choices == Py_None || PySet_Contains(choices, value) == 1;
    }
    if (code == 3) return PyBool_Check(value);
    if (code != 1 && code != 2) return 0;
    if (PyFloat_CheckExact(value)) {
        if (code == 1 || !isfinite(PyFloat_AS_DOUBLE(value))) return 0;
    } else if (!PyLong_CheckExact(value)) {
        return 0; /* bool is not an exact int */
    }
    if (minimum != Py_None && PyObject_RichCompareBool(value, minimum, Py_LT) != 0) return 0;
    if (maximum != Py_None && PyObject_RichCompareBool(value, maximum, Py_GT) != 0) return 0;
    return 1;
}

/* Every op of payload fits its collection's specs in table {coll: {field: spec}}. */
static int payload_fits(PyObject *table, PyObject *payload) {
    PyObject *specs = PyDict_GetItemWithError(table, PyTuple_GET_ITEM(payload, 0));
    if (specs == NULL || !PyDict_CheckExact(specs)) return 0;
    PyObject *ops = PyTuple_GET_ITEM(payload, 2);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ops); i++) {
        PyObject *op = PyTuple_GET_ITEM(ops, i);
        PyObject *name = PyTuple_GET_ITEM(op, 0);
        if (name == Py_None) continue; /* a document delete */
        PyObject *spec = PyDict_GetItemWithError(specs, name);
        if (spec == NULL) return 0;
        if (PyTuple_GET_ITEM(op, 2) == Py_False && !value_fits(spec, PyTuple_GET_ITEM(op, 1)))
            return 0;
    }
    return 1;
}

/* -- open_payload --------------------------------------------------------------------- */
/* The payload of DATA envelope data under key, checked against table (if not NULL) and
 * max_wall; NULL (exception cleared) whenever the Python path must decide. */
static PyObject *open_one(PyObject *data, PyObject *key, PyObject *table, long long max_wall) {
    layout e;
    if (aead_decrypt == NULL || !PyBytes_CheckExact(data) || !PyBytes_CheckExact(key)
        || PyBytes_GET_SIZE(key) != KEY_BYTES)
        return NULL;
    const uint8_t *raw = (const uint8_t *)PyBytes_AS_STRING(data);
    if (parse_envelope(raw, PyBytes_GET_SIZE(data), &e) < 0 || e.kind != 0) return NULL;
    /* AAD = canonical {v, seq, kind, prev, epoch, space, author}: cut from the envelope */
    uint8_t aad[256];
    Py_ssize_t a = 0;
    aad[a++] = 0xa7;
    memcpy(aad + a, "\x61v\x01", 3);
    a += 3;
    memcpy(aad + a, e.seq_at, e.seq_end - e.seq_at);
    a += e.seq_end - e.seq_at;
    memcpy(aad + a, e.kind_at, e.epoch_end - e.kind_at);
    a += e.epoch_end - e.kind_at;
    memcpy(aad + a, e.space - 8, 8 + 32); /* "\x65space\x58\x20" + space */
    a += 40;
    memcpy(aad + a, e.author - 9, 9 + 32); /* "\x66author\x58\x20" + author */
    a += 41;
    assert(a <= (Py_ssize_t)sizeof aad); /* at most 158: every head is bounded */
    Py_ssize_t size = e.ct_len - TAG_BYTES;
    uint8_t stack[4096];
    uint8_t *plain = size <= (Py_ssize_t)sizeof stack ? stack : PyMem_Malloc(size);
    if (plain == NULL) {
        PyErr_Clear(); /* out of memory: defer, the Python path raises if it still is */
        return NULL;
    }
    PyObject *out = NULL;
    if (aead_decrypt(plain, NULL, NULL, e.ct, (unsigned long long)e.ct_len, aad,
                     (unsigned long long)a, e.nonce, (const uint8_t *)PyBytes_AS_STRING(key))
        == 0)
        out = read_payload(plain, size);
    if (plain != stack) PyMem_Free(plain);
    if (out != NULL && table != NULL) {
        long long wall = small_uint(PyTuple_GET_ITEM(PyTuple_GET_ITEM(out, 3), 0));
        if (wall < 0 || wall > max_wall || !payload_fits(table, out)) Py_CLEAR(out);
    }
    if (out == NULL) PyErr_Clear();
    return out;
}

static PyObject *open_payload(PyObject *Py_UNUSED(module), PyObject *const *args,
                              Py_ssize_t nargs) {
    if (nargs != 2 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "open_payload(raw, key[, schema, max_wall_ms])");
        return NULL;
    }
    PyObject *table = nargs == 4 ? args[2] : NULL;
    long long max_wall = 0;
    if (table != NULL) {
        if (!PyDict_CheckExact(table)) Py_RETURN_NONE;
        max_wall = PyLong_AsLongLong(args[3]);
        if (max_wall == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }
    PyObject *out = open_one(args[0], args[1], table, max_wall);
    return out != NULL ? out : Py_NewRef(Py_None);
}

PyDoc_STRVAR(open_all_doc,
"open_all(envelopes, keys, schema, max_wall_ms) -> (opened, newest, doc_keys) | None\n\n"
"open_payload for every envelope of a batch, keys the group key by epoch: a list of\n"
"(envelope, payload, (coll, doc)), the greatest hlc and the set of (coll, doc) written;\n"
"None unless every envelope opens and passes (then each goes its own way in Python).");

static PyObject *open_all(PyObject *Py_UNUSED(module), PyObject *const *args,
                          Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1])
        || !PyDict_CheckExact(args[2]) || envelope_type == NULL)
        Py_RETURN_NONE;
    PyObject *envs = args[0], *keys = args[1], *table = args[2];
    long long max_wall = PyLong_AsLongLong(args[3]);
    if (max_wall == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyList_GET_SIZE(envs);
    PyObject *pairs = PyList_New(n), *doc_keys = PySet_New(NULL), *newest = NULL, *out = NULL;
    if (pairs == NULL || doc_keys == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *env = PyList_GET_ITEM(envs, i);
        if (Py_TYPE(env) != envelope_type) goto done;
        PyObject *epoch = slot_get(5, env), *raw = slot_get(10, env);
        PyObject *key = epoch != NULL ? PyDict_GetItemWithError(keys, epoch) : NULL;
        PyObject *payload = key != NULL && raw != NULL ? open_one(raw, key, table, max_wall) : NULL;
        Py_XDECREF(epoch);
        Py_XDECREF(raw);
        if (payload == NULL) goto done;
        PyObject *doc_key = PyTuple_GetSlice(payload, 0, 2);
        PyObject *pair = doc_key != NULL ? PyTuple_Pack(3, env, payload, doc_key) : NULL;
        PyObject *hlc = PyTuple_GET_ITEM(payload, 3);
        int later = newest == NULL ? 1 : PyObject_RichCompareBool(hlc, newest, Py_GT);
        if (later > 0) Py_XSETREF(newest, Py_NewRef(hlc));
        Py_DECREF(payload);
        if (pair == NULL || doc_key == NULL || later < 0 || PySet_Add(doc_keys, doc_key) < 0) {
            Py_XDECREF(pair);
            Py_XDECREF(doc_key);
            goto done;
        }
        Py_DECREF(doc_key);
        PyList_SET_ITEM(pairs, i, pair);
    }
    out = PyTuple_Pack(3, pairs, newest != NULL ? newest : Py_None, doc_keys);
done:
    Py_XDECREF(pairs); /* unset items are NULL, which list dealloc skips */
    Py_XDECREF(doc_keys);
    Py_XDECREF(newest);
    if (out == NULL) PyErr_Clear();
    return out != NULL ? out : Py_NewRef(Py_None);
}

/* -- lww_apply ------------------------------------------------------------------------ */
/* Lowercase hex of bytes b (at most 32: node ids and author keys), through the name cache. */
static PyObject *hex_of(PyObject *b) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    const uint8_t *s = (const uint8_t *)PyBytes_AS_STRING(b);
    uint8_t text[2 * 32];
    for (Py_ssize_t i = 0; i < n; i++) {
        text[2 * i] = (uint8_t)digits[s[i] >> 4];
        text[2 * i + 1] = (uint8_t)digits[s[i] & 15];
    }
    return text_of(text, 2 * n, 1);
}

/* The wall clock of a stored entry [wall, counter, node, author, deleted, value]; -1 if
 * it is not such an entry with a small non-negative wall (then Python decides). */
static long long entry_wall(PyObject *entry) {
    if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 6) return -1;
    return small_uint(PyList_GET_ITEM(entry, 0));
}

PyDoc_STRVAR(lww_apply_doc,
"lww_apply(fields, payload, author) -> bool | None\n\n"
"DocState.apply for a document without a tombstone: True/False as the Python method\n"
"returns, with fields holding the same entries (a winning write rewrites the held entry\n"
"list in place: a state's entries are its own); None (fields untouched) when Python\n"
"must decide: a document delete, a wall-clock tie with a held entry, anything unusual.");

/* lww_apply's work: a new reference to True, False or None, or NULL on a real error. */
static PyObject *lww_core(PyObject *fields, PyObject *payload, PyObject *author) {
    if (!PyDict_CheckExact(fields) || !PyTuple_Check(payload) || PyTuple_GET_SIZE(payload) != 4
        || !PyBytes_CheckExact(author))
        Py_RETURN_NONE;
    PyObject *ops = PyTuple_GET_ITEM(payload, 2), *hlc = PyTuple_GET_ITEM(payload, 3);
    if (!PyTuple_Check(ops) || !PyTuple_Check(hlc) || PyTuple_GET_SIZE(hlc) != 3)
        Py_RETURN_NONE;
    PyObject *wall = PyTuple_GET_ITEM(hlc, 0), *counter = PyTuple_GET_ITEM(hlc, 1);
    PyObject *node = PyTuple_GET_ITEM(hlc, 2);
    if (!PyLong_CheckExact(wall) || !PyLong_CheckExact(counter) || !PyBytes_CheckExact(node)
        || PyBytes_GET_SIZE(node) > 32 || PyBytes_GET_SIZE(author) > 32)
        Py_RETURN_NONE;
    long long w = small_uint(wall);
    Py_ssize_t n = PyTuple_GET_SIZE(ops);
    if ((w == -1 && PyErr_Occurred()) || w < 0 || n > 32) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* pass 1: decide without touching fields */
    int take[32];
    PyObject *held_entry[32]; /* borrowed: fields is not touched until pass 2 */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = PyTuple_GET_ITEM(ops, i);
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) != 3) Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(op, 0);
        if (!PyUnicode_CheckExact(name)) Py_RETURN_NONE; /* None: a document delete */
        for (Py_ssize_t j = 0; j < i; j++) {
            if (same_text(name, PyTuple_GET_ITEM(PyTuple_GET_ITEM(ops, j), 0))) Py_RETURN_NONE;
        }
        PyObject *cur = held_entry[i] = PyDict_GetItemWithError(fields, name);
        if (cur == NULL) {
            if (PyErr_Occurred()) {
                PyErr_Clear();
                Py_RETURN_NONE;
            }
            take[i] = 1;
            continue;
        }
        long long held = entry_wall(cur);
        if (held < 0 || held == w) Py_RETURN_NONE;
        take[i] = w > held;
    }
    /* pass 2: write the winners, as [wall, counter, node hex, author hex, deleted, value] */
    PyObject *node_hex = NULL, *author_hex = NULL;
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!take[i]) continue;
        PyObject *op = PyTuple_GET_ITEM(ops, i);
        if (node_hex == NULL && ((node_hex = hex_of(node)) == NULL
                                 || (author_hex = hex_of(author)) == NULL))
            goto error;
        PyObject *items[6] = {wall, counter, node_hex, author_hex, PyTuple_GET_ITEM(op, 2),
                              PyTuple_GET_ITEM(op, 1)};
        changed = 1;
        PyObject *entry = held_entry[i];
        if (entry != NULL) { /* the held entry, rewritten in place (entries are never shared) */
            for (int k = 0; k < 6; k++) Py_SETREF(PyList_GET_ITEM(entry, k), Py_NewRef(items[k]));
            continue;
        }
        if ((entry = PyList_New(6)) == NULL) goto error;
        for (int k = 0; k < 6; k++) PyList_SET_ITEM(entry, k, Py_NewRef(items[k]));
        int rc = PyDict_SetItem(fields, PyTuple_GET_ITEM(op, 0), entry);
        Py_DECREF(entry);
        if (rc < 0) goto error;
    }
    Py_XDECREF(node_hex);
    Py_XDECREF(author_hex);
    return PyBool_FromLong(changed);
error: /* out of memory half-way: a real error, not a "let Python decide" */
    Py_XDECREF(node_hex);
    Py_XDECREF(author_hex);
    return NULL;
}

static PyObject *lww_apply(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "lww_apply(fields, payload, author)");
        return NULL;
    }
    return lww_core(args[0], args[1], args[2]);
}

PyDoc_STRVAR(merge_all_doc,
"merge_all(opened, docs, dirty, fallback) -> None\n\n"
"Soil._merge for every (envelope, payload, key) of opened, in order: the LWW merge into\n"
"docs[key] where it can decide, dirty[key] = delta id where the document changed;\n"
"fallback(envelope, payload) (Soil._merge itself) for every other item.");

static PyObject *merge_all(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyDict_CheckExact(args[1])
        || !PyDict_CheckExact(args[2]) || doc_state_type == NULL || envelope_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "merge_all(opened: list, docs: dict, dirty: dict, fallback)");
        return NULL;
    }
    PyObject *pairs = args[0], *docs = args[1], *dirty = args[2], *fallback = args[3];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pairs); i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 3) {
            PyErr_SetString(PyExc_TypeError, "merge_all: items must be (envelope, payload, key)");
            return NULL;
        }
        Py_INCREF(pair); /* the fallback runs Python code: keep this item alive meanwhile */
        PyObject *env = PyTuple_GET_ITEM(pair, 0), *payload = PyTuple_GET_ITEM(pair, 1);
        PyObject *decided = NULL, *key = Py_NewRef(PyTuple_GET_ITEM(pair, 2));
        if (Py_TYPE(env) == envelope_type && PyTuple_Check(payload)
            && PyTuple_GET_SIZE(payload) == 4) {
            PyObject *state = PyDict_GetItemWithError(docs, key);
            if (state != NULL && Py_TYPE(state) == doc_state_type) {
                PyObject *tomb = Py_TYPE(doc_setters[1])->tp_descr_get(doc_setters[1], state, NULL);
                PyObject *fields = Py_TYPE(doc_setters[0])->tp_descr_get(doc_setters[0], state, NULL);
                PyObject *author = slot_get(2, env);
                if (tomb == Py_None && fields != NULL && author != NULL)
                    decided = lww_core(fields, payload, author);
                Py_XDECREF(tomb);
                Py_XDECREF(fields);
                Py_XDECREF(author);
                if (decided == NULL && PyErr_Occurred()) {
                    Py_DECREF(key);
                    Py_DECREF(pair);
                    return NULL;
                }
            }
        }
        PyErr_Clear();
        int rc = 0;
        if (decided == NULL || decided == Py_None) {
            PyObject *r = PyObject_CallFunctionObjArgs(fallback, env, payload, NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        } else if (decided == Py_True) {
            PyObject *id = slot_get(11, env); /* the memo of delta_id, if it was asked */
            if (id == Py_None) {
                Py_DECREF(id);
                id = PyObject_GetAttrString(env, "delta_id");
            }
            rc = id == NULL ? -1 : PyDict_SetItem(dirty, key, id);
            Py_XDECREF(id);
        }
        Py_XDECREF(decided);
        Py_XDECREF(key);
        Py_DECREF(pair);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* -- stored document states ------------------------------------------------------- */
/* The store's own rows {"f": {name: [wall, counter, node, author, deleted, value]},
 * "t": null / [wall, counter, node, author]} (mycelium/crdt/doc.py), written as libipld's
 * DAG-CBOR. load_state reads what DocState.decode reads; state_row writes exactly the
 * bytes libipld writes. Both defer (None) on anything else. */

/* Any CBOR value that is a scalar, array or text-keyed map (as cbor2 decodes it). */
static PyObject *read_value(reader *r, int depth) {
    if (r->p >= r->end || depth > 8) return NULL;
    int major = *r->p >> 5;
    if (major != 4 && major != 5) return read_scalar_text(r, 1);
    uint64_t n;
    if (read_head(r, &major, &n, 0) < 0 || n > (uint64_t)(r->end - r->p)) return NULL;
    if (major == 4) {
        PyObject *list = PyList_New((Py_ssize_t)n);
        if (list == NULL) return NULL;
        for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
            PyObject *item = read_value(r, depth + 1);
            if (item == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, i, item);
        }
        return list;
    }
    PyObject *dict = PyDict_New();
    if (dict == NULL) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *k;
        Py_ssize_t kn;
        PyObject *key = NULL, *value = NULL;
        if (read_key(r, &k, &kn) < 0 || (key = text_of(k, kn, 1)) == NULL
            || (value = read_value(r, depth + 1)) == NULL || PyDict_SetItem(dict, key, value) < 0
            || PyDict_GET_SIZE(dict) != (Py_ssize_t)i + 1) { /* a key twice: Python decides */
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    return dict;
}

static int is_stamp_part(PyObject *entry, int text_from) {
    for (int i = 0; i < 4; i++) {
        PyObject *x = PyList_GET_ITEM(entry, i);
        if (i < text_from ? !PyLong_CheckExact(x) : !PyUnicode_CheckExact(x)) return 0;
    }
    return 1;
}

/* The live values of the fields in indexed (a frozenset), in its iteration order, as
 * DocState.values_of builds them; NULL (maybe with no exception set: a malformed entry)
 * when it cannot, never a partial dict. */
static PyObject *values_of(PyObject *fields, PyObject *indexed) {
    PyObject *out = PyDict_New(), *it = out ? PyObject_GetIter(indexed) : NULL, *name;
    int rc = 0;
    if (it == NULL) {
        Py_XDECREF(out);
        return NULL;
    }
    while ((name = PyIter_Next(it)) != NULL) {
        PyObject *entry = PyDict_GetItemWithError(fields, name);
        if (entry != NULL && PyList_CheckExact(entry) && PyList_GET_SIZE(entry) == 6) {
            int deleted = PyObject_IsTrue(PyList_GET_ITEM(entry, 4));
            rc = deleted < 0 ? -1 : deleted ? 0 : PyDict_SetItem(out, name, PyList_GET_ITEM(entry, 5));
        } else if (entry != NULL || PyErr_Occurred()) {
            rc = -1;
        }
        Py_DECREF(name);
        if (rc < 0) break;
    }
    Py_DECREF(it);
    if (rc < 0 || PyErr_Occurred()) Py_CLEAR(out);
    return out;
}

PyDoc_STRVAR(load_state_doc,
"load_state(body, indexed) -> (DocState, values) | None\n\n"
"DocState.decode(body) and its values_of(indexed), or None (then Python decides).");

/* The DocState and indexed values of a stored row as new references in *state_out and
 * *values_out: 0, or -1 (exception cleared) to defer. */
static int load_one(PyObject *body, PyObject *indexed, PyObject **state_out,
                    PyObject **values_out) {
    if (doc_state_type == NULL || !PyBytes_CheckExact(body)) return -1;
    const uint8_t *data = (const uint8_t *)PyBytes_AS_STRING(body);
    reader r = {data, data + PyBytes_GET_SIZE(body)};
    PyObject *fields = NULL, *tomb = NULL, *state = NULL, *values = NULL;
    if (EXPECT(&r, "\xa2\x61" "f") < 0) goto defer;
    if (r.p >= r.end || (*r.p >> 5) != 5 || (fields = read_value(&r, 0)) == NULL) goto defer;
    if (EXPECT(&r, "\x61t") < 0) goto defer;
    if (r.p < r.end && *r.p == 0xf6) {
        tomb = Py_NewRef(Py_None);
        r.p++;
    } else if ((tomb = read_value(&r, 0)) == NULL || !PyList_CheckExact(tomb)
               || PyList_GET_SIZE(tomb) != 4 || !is_stamp_part(tomb, 2)) {
        goto defer;
    }
    if (r.p != r.end) goto defer;
    Py_ssize_t pos = 0;
    PyObject *key, *entry;
    while (PyDict_Next(fields, &pos, &key, &entry)) /* only hex stamps: old rows are Python's */
        if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 6 || !is_stamp_part(entry, 2))
            goto defer;
    if ((values = values_of(fields, indexed)) == NULL) goto defer;
    if ((state = doc_state_type->tp_alloc(doc_state_type, 0)) == NULL) goto defer;
    if (Py_TYPE(doc_setters[0])->tp_descr_set(doc_setters[0], state, fields) < 0
        || Py_TYPE(doc_setters[1])->tp_descr_set(doc_setters[1], state, tomb) < 0)
        goto defer;
    Py_DECREF(fields);
    Py_DECREF(tomb);
    *state_out = state;
    *values_out = values;
    return 0;
defer:
    Py_XDECREF(fields);
    Py_XDECREF(tomb);
    Py_XDECREF(state);
    Py_XDECREF(values);
    PyErr_Clear();
    return -1;
}

static PyObject *load_state(PyObject *Py_UNUSED(module), PyObject *const *args,
                            Py_ssize_t nargs) {
    PyObject *state, *values, *out = NULL;
    if (nargs == 2 && load_one(args[0], args[1], &state, &values) == 0) {
        out = PyTuple_Pack(2, state, values);
        Py_DECREF(state);
        Py_DECREF(values);
        if (out == NULL) PyErr_Clear();
    }
    return out != NULL ? out : Py_NewRef(Py_None);
}

/* A new empty DocState (fields {}, tomb None), as DocState() builds it. */
static PyObject *empty_state(void) {
    PyObject *state = doc_state_type->tp_alloc(doc_state_type, 0), *fields = PyDict_New();
    if (state == NULL || fields == NULL
        || Py_TYPE(doc_setters[0])->tp_descr_set(doc_setters[0], state, fields) < 0
        || Py_TYPE(doc_setters[1])->tp_descr_set(doc_setters[1], state, Py_None) < 0)
        Py_CLEAR(state);
    Py_XDECREF(fields);
    return state;
}

PyDoc_STRVAR(load_rows_doc,
"load_rows(rows, wanted, indexed, docs, before) -> leftovers\n\n"
"Soil._prefetch's loop for one collection of a space without encryption at rest: for\n"
"each (doc, body) of rows, docs[wanted[doc]] = the state and before[...] = its indexed\n"
"values. Rows it cannot read come back, in order, for Python.");

static PyObject *load_rows(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs) {
    if (nargs != 5 || !PyDict_CheckExact(args[1]) || !PyDict_CheckExact(args[3])
        || !PyDict_CheckExact(args[4]) || doc_state_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "load_rows(rows, wanted, indexed, docs, before)");
        return NULL;
    }
    PyObject *wanted = args[1], *indexed = args[2], *docs = args[3], *before = args[4];
    PyObject *left = PyList_New(0), *it = PyObject_GetIter(args[0]), *row;
    if (left == NULL || it == NULL) goto error;
    while ((row = PyIter_Next(it)) != NULL) {
        PyObject *key = NULL, *state = NULL, *values = NULL;
        int rc = 0, loaded = 0;
        if (PyTuple_CheckExact(row) && PyTuple_GET_SIZE(row) == 2
            && (key = PyDict_GetItemWithError(wanted, PyTuple_GET_ITEM(row, 0))) != NULL)
            loaded = load_one(PyTuple_GET_ITEM(row, 1), indexed, &state, &values) == 0;
        if (loaded) {
            rc = PyDict_SetItem(docs, key, state) < 0 || PyDict_SetItem(before, key, values) < 0
                 ? -1 : 0;
            Py_DECREF(state);
            Py_DECREF(values);
        } else {
            rc = PyErr_Occurred() ? -1 : PyList_Append(left, row);
        }
        Py_DECREF(row);
        if (rc < 0) goto error;
    }
    if (PyErr_Occurred()) goto error;
    Py_DECREF(it);
    return left;
error:
    Py_XDECREF(it);
    Py_XDECREF(left);
    return NULL;
}

PyDoc_STRVAR(fill_empty_doc,
"fill_empty(wanted, docs, before, empty) -> None\n\n"
"An empty DocState in docs (and empty as its values in before) for every key of\n"
"wanted.values() that docs lacks: the documents no row was found for.");

static PyObject *fill_empty(PyObject *Py_UNUSED(module), PyObject *const *args,
                            Py_ssize_t nargs) {
    if (nargs != 4 || !PyDict_CheckExact(args[0]) || !PyDict_CheckExact(args[1])
        || !PyDict_CheckExact(args[2]) || doc_state_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "fill_empty(wanted, docs, before, empty)");
        return NULL;
    }
    PyObject *docs = args[1], *before = args[2], *empty = args[3], *doc, *key;
    Py_ssize_t pos = 0;
    while (PyDict_Next(args[0], &pos, &doc, &key)) {
        int has = PyDict_Contains(docs, key);
        if (has < 0) return NULL;
        if (has) continue;
        PyObject *state = empty_state();
        int rc = state == NULL || PyDict_SetItem(docs, key, state) < 0
                 || (empty != Py_None && PyDict_SetItem(before, key, empty) < 0) ? -1 : 0;
        Py_XDECREF(state);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

/* A growing output buffer. */
typedef struct {
    uint8_t *buf;
    Py_ssize_t len, cap;
    int heap;
} writer;

/* A writer starts in a caller's stack buffer (stack, cap) and moves to the heap only if a
 * state outgrows it; writer_free releases what it allocated. */
static inline int put(writer *w, const void *data, Py_ssize_t n) {
    if (w->len + n > w->cap) {
        Py_ssize_t cap = (w->cap + n) * 2;
        uint8_t *grown = w->heap ? PyMem_Realloc(w->buf, cap) : PyMem_Malloc(cap);
        if (grown == NULL) return -1;
        if (!w->heap) memcpy(grown, w->buf, w->len);
        w->buf = grown;
        w->cap = cap;
        w->heap = 1;
    }
    assert(n >= 0 && w->len + n <= w->cap);
    memcpy(w->buf + w->len, data, n);
    w->len += n;
    return 0;
}

static int put_head(writer *w, int major, uint64_t arg) {
    uint8_t h[9];
    int n;
    if (arg < 24) {
        h[0] = (uint8_t)(major << 5 | arg);
        n = 1;
    } else {
        int width = arg < 0x100 ? 1 : arg < 0x10000 ? 2 : arg < 0x100000000ULL ? 4 : 8;
        h[0] = (uint8_t)(major << 5 | (width == 1 ? 24 : width == 2 ? 25 : width == 4 ? 26 : 27));
        for (int i = 0; i < width; i++) h[1 + i] = (uint8_t)(arg >> (8 * (width - 1 - i)));
        n = 1 + width;
    }
    return put(w, h, n);
}

static int put_text(writer *w, PyObject *s) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) return -1;
    return put_head(w, 3, (uint64_t)n) < 0 ? -1 : put(w, u, n);
}

typedef struct {
    const char *utf8;
    Py_ssize_t len;
    PyObject *key, *value;
} map_item;

/* DAG-CBOR key order: shorter first, then bytewise. */
static int key_before(const map_item *a, const map_item *b) {
    if (a->len != b->len) return a->len < b->len;
    return memcmp(a->utf8, b->utf8, a->len) < 0;
}

/* Encode as libipld.encode_dag_cbor does; -1 for anything it would refuse or that is not
 * plain data (then the Python path encodes, through libipld or cbor2). */
static int put_value(writer *w, PyObject *v, int depth) {
    if (depth > 8) return -1;
    if (v == Py_None) return put(w, "\xf6", 1);
    if (v == Py_True) return put(w, "\xf5", 1);
    if (v == Py_False) return put(w, "\xf4", 1);
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow > 0) {
            unsigned long long u = PyLong_AsUnsignedLongLong(v);
            if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
            return put_head(w, 0, u);
        }
        if (overflow < 0 || (x == -1 && PyErr_Occurred())) return -1;
        return x >= 0 ? put_head(w, 0, (uint64_t)x) : put_head(w, 1, (uint64_t)(-1 - x));
    }
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        if (!isfinite(d) || (d == 0.0 && signbit(d))) return -1;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        uint8_t out[9] = {0xfb};
        for (int i = 0; i < 8; i++) out[1 + i] = (uint8_t)(bits >> (8 * (7 - i)));
        return put(w, out, 9);
    }
    if (PyUnicode_CheckExact(v)) return put_text(w, v);
    if (PyList_CheckExact(v)) {
        Py_ssize_t n = PyList_GET_SIZE(v);
        if (put_head(w, 4, (uint64_t)n) < 0) return -1;
        for (Py_ssize_t i = 0; i < n; i++)
            if (put_value(w, PyList_GET_ITEM(v, i), depth + 1) < 0) return -1;
        return 0;
    }
    if (PyDict_CheckExact(v)) {
        Py_ssize_t n = PyDict_GET_SIZE(v), pos = 0, i = 0;
        if (n > 64) return -1;
        map_item items[64];
        PyObject *key, *value;
        while (PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_CheckExact(key)) return -1;
            items[i].utf8 = PyUnicode_AsUTF8AndSize(key, &items[i].len);
            if (items[i].utf8 == NULL) return -1;
            items[i].key = key;
            items[i].value = value;
            for (Py_ssize_t j = i; j > 0 && key_before(&items[j], &items[j - 1]); j--) {
                map_item t = items[j];
                items[j] = items[j - 1];
                items[j - 1] = t;
            }
            i++;
        }
        if (put_head(w, 5, (uint64_t)n) < 0) return -1;
        for (i = 0; i < n; i++)
            if (put_head(w, 3, (uint64_t)items[i].len) < 0
                || put(w, items[i].utf8, items[i].len) < 0
                || put_value(w, items[i].value, depth + 1) < 0)
                return -1;
        return 0;
    }
    return -1; /* bytes (libipld may write a CID), tuples, anything else */
}

/* Whether the bytes 0xfb and eight zeros (a float +0.0) occur anywhere in buf. */
static int has_float_zero(const uint8_t *buf, Py_ssize_t len) {
    static const uint8_t zero[8];
    const uint8_t *p = buf, *end = buf + len;
    while (end - p >= 9 && (p = memchr(p, 0xfb, (size_t)(end - p - 8))) != NULL) {
        if (memcmp(p + 1, zero, 8) == 0) return 1;
        p++;
    }
    return 0;
}

PyDoc_STRVAR(state_row_doc,
"state_row(fields, tomb, indexed) -> (live, body, values) | None\n\n"
"DocState(fields, tomb): its live flag, encode() and values_of(indexed), or None.");

/* live flag, body and indexed values of a state; 0, or -1 (no exception) to defer. */
static int row_parts(PyObject *fields, PyObject *tomb, PyObject *indexed, int *live,
                     PyObject **body, PyObject **values) {
    Py_ssize_t pos = 0;
    PyObject *key, *entry;
    *live = 0;
    *body = *values = NULL;
    if (!PyDict_CheckExact(fields)) return -1;
    while (PyDict_Next(fields, &pos, &key, &entry)) {
        if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 6) return -1;
        int deleted = PyObject_IsTrue(PyList_GET_ITEM(entry, 4));
        if (deleted < 0) {
            PyErr_Clear();
            return -1;
        }
        *live |= !deleted;
    }
    uint8_t stack[2048];
    writer w = {stack, 0, sizeof stack, 0};
    int rc = put(&w, "\xa2\x61" "f", 3);
    if (rc == 0) rc = put_value(&w, fields, 0);
    if (rc == 0) rc = put(&w, "\x61t", 2);
    if (rc == 0) rc = put_value(&w, tomb, 0);
    /* encode_stored hands output holding these bytes to cbor2 (libipld's -0.0): so do we */
    if (rc == 0 && has_float_zero(w.buf, w.len)) rc = -1;
    *body = rc == 0 ? PyBytes_FromStringAndSize((const char *)w.buf, w.len) : NULL;
    if (w.heap) PyMem_Free(w.buf);
    *values = *body != NULL ? values_of(fields, indexed) : NULL;
    if (*values == NULL) {
        Py_CLEAR(*body);
        PyErr_Clear();
        return -1;
    }
    return 0;
}

static PyObject *state_row(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs) {
    int live;
    PyObject *body, *values;
    if (nargs != 3 || row_parts(args[0], args[1], args[2], &live, &body, &values) < 0)
        Py_RETURN_NONE;
    PyObject *out = PyTuple_Pack(3, live ? Py_True : Py_False, body, values);
    Py_DECREF(body);
    Py_DECREF(values);
    if (out == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return out;
}

/* Index rows (space, coll, field, value, doc) of the values in a that b lacks or holds
 * differently: the list comprehensions of Soil._write_docs. Their `!=` is compared as
 * Python does (no identity shortcut: a NaN held twice differs from itself). */
static int index_rows(PyObject *out, PyObject *a, PyObject *b, PyObject *space, PyObject *coll,
                      PyObject *doc) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(a, &pos, &k, &v)) {
        PyObject *other = PyDict_GetItemWithError(b, k), *ne = NULL;
        int differs = other == NULL ? (PyErr_Occurred() ? -1 : 1)
                      : (ne = PyObject_RichCompare(other, v, Py_NE)) == NULL ? -1
                                                                           : PyObject_IsTrue(ne);
        Py_XDECREF(ne);
        if (differs < 0) return -1;
        if (!differs) continue;
        PyObject *row = PyTuple_Pack(5, space, coll, k, v, doc);
        int rc = row != NULL ? PyList_Append(out, row) : -1;
        Py_XDECREF(row);
        if (rc < 0) return -1;
    }
    return 0;
}

PyDoc_STRVAR(doc_rows_doc,
"doc_rows(space, dirty, docs, before, indexed, Change) -> (rows, changes, stale, fresh) | None\n\n"
"The loop of Soil._write_docs for a space without encryption at rest: a docs row and a\n"
"Change per dirty document, index rows to delete and insert; before[key] updated where\n"
"the indexed values changed. None (nothing touched) sends the batch to that loop.");

static PyObject *doc_rows(PyObject *Py_UNUSED(module), PyObject *const *args,
                          Py_ssize_t nargs) {
    /* Change must be a tuple subclass (a NamedTuple): named_tuple writes five items */
    if (nargs != 6 || doc_state_type == NULL || !PyDict_CheckExact(args[1])
        || !PyDict_CheckExact(args[2]) || !PyDict_CheckExact(args[3])
        || !PyDict_CheckExact(args[4]) || !PyType_Check(args[5])
        || !PyType_FastSubclass((PyTypeObject *)args[5], Py_TPFLAGS_TUPLE_SUBCLASS))
        Py_RETURN_NONE;
    PyObject *space = args[0], *dirty = args[1], *docs = args[2], *before = args[3];
    PyObject *indexed_of = args[4];
    PyTypeObject *change_type = (PyTypeObject *)args[5];
    PyObject *rows = PyList_New(0), *changes = PyList_New(0), *stale = PyList_New(0);
    PyObject *fresh = PyList_New(0), *updates = PyList_New(0), *empty = PyDict_New();
    PyObject *key, *delta_id, *out = NULL;
    Py_ssize_t pos = 0;
    if (!rows || !changes || !stale || !fresh || !updates || !empty) goto done;
    while (PyDict_Next(dirty, &pos, &key, &delta_id)) {
        if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2) goto done;
        PyObject *coll = PyTuple_GET_ITEM(key, 0), *doc = PyTuple_GET_ITEM(key, 1);
        PyObject *state = PyDict_GetItemWithError(docs, key);
        PyObject *indexed = PyDict_GetItemWithError(indexed_of, coll);
        if (state == NULL || Py_TYPE(state) != doc_state_type || indexed == NULL) goto done;
        PyObject *fields = Py_TYPE(doc_setters[0])->tp_descr_get(doc_setters[0], state, NULL);
        PyObject *tomb = Py_TYPE(doc_setters[1])->tp_descr_get(doc_setters[1], state, NULL);
        int live, rc = fields != NULL && tomb != NULL ? 0 : -1;
        PyObject *body = NULL, *values = NULL;
        if (rc == 0) rc = row_parts(fields, tomb, indexed, &live, &body, &values);
        Py_XDECREF(fields);
        Py_XDECREF(tomb);
        if (rc < 0) goto done;
        PyObject *row = PyTuple_Pack(5, space, coll, doc, live ? int_one : int_zero, body);
        PyObject *items[5] = {Py_NewRef(space), Py_NewRef(coll), Py_NewRef(doc),
                              Py_NewRef(delta_id), Py_NewRef(live ? Py_False : Py_True)};
        PyObject *change = named_tuple(change_type, 5, items);
        rc = row != NULL && change != NULL && PyList_Append(rows, row) == 0
             && PyList_Append(changes, change) == 0 ? 0 : -1;
        Py_XDECREF(row);
        Py_XDECREF(change);
        Py_DECREF(body);
        PyObject *old = rc == 0 ? PyDict_GetItemWithError(before, key) : NULL;
        if (old == NULL && !PyErr_Occurred()) old = empty;
        int differs = rc == 0 && old != NULL && PyDict_CheckExact(old)
                      ? PyObject_RichCompareBool(values, old, Py_NE) : -1;
        if (differs > 0) {
            PyObject *pair = PyTuple_Pack(2, key, values);
            differs = index_rows(stale, old, values, space, coll, doc) < 0
                      || index_rows(fresh, values, old, space, coll, doc) < 0 || pair == NULL
                      || PyList_Append(updates, pair) < 0 ? -1 : 1;
            Py_XDECREF(pair);
        }
        Py_DECREF(values);
        if (differs < 0) goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(updates); i++) { /* all rows made: commit */
        PyObject *pair = PyList_GET_ITEM(updates, i);
        if (PyDict_SetItem(before, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1)) < 0)
            goto done; /* out of memory: a real error */
    }
    out = PyTuple_Pack(4, rows, changes, stale, fresh);
done:
    Py_XDECREF(rows);
    Py_XDECREF(changes);
    Py_XDECREF(stale);
    Py_XDECREF(fresh);
    Py_XDECREF(updates);
    Py_XDECREF(empty);
    if (out == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return out;
}

/* -- configure ------------------------------------------------------------------------ */
/* Everything configure() takes is checked into a staging copy first and published only
 * when all of it is valid, so a failed call leaves the previous configuration (or none)
 * intact: never half of each. */
typedef struct {
    PyObject *sha; /* hashlib.sha256 */
    aead_decrypt_fn aead;
    PyTypeObject *types[4], *doc_state;
    PyObject *setters[N_ENV_FIELDS], *doc_setters[2], *kinds[2], *version;
    Py_ssize_t limits[8];
} config;

static void *pointer_arg(PyObject *o) {
    void *p = PyLong_Check(o) ? PyLong_AsVoidPtr(o) : NULL;
    if (p == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "configure: null or non-int function pointer");
    return p;
}

/* A slot of type: a member descriptor (what __slots__ and slotted dataclasses make) that
 * belongs to type itself, so reading and writing it through tp_descr_get/set on an
 * instance of type is a plain, type-checked slot access. */
static int is_slot_of(PyObject *d, PyTypeObject *type) {
    return Py_IS_TYPE(d, &PyMemberDescr_Type) && PyDescr_TYPE(d) == type;
}

static int check_config(PyObject *pointers, PyObject *types, PyObject *setters,
                        PyObject *kinds, PyObject *version, PyObject *limits, PyObject *docs,
                        config *c) {
    if (PyTuple_GET_SIZE(pointers) != 2 || PyTuple_GET_SIZE(types) != 4
        || PyTuple_GET_SIZE(setters) != N_ENV_FIELDS || PyTuple_GET_SIZE(kinds) != 2
        || PyTuple_GET_SIZE(limits) != 8 || PyTuple_GET_SIZE(docs) != 3) {
        PyErr_SetString(PyExc_ValueError, "configure: wrong tuple sizes");
        return -1;
    }
    c->sha = PyTuple_GET_ITEM(pointers, 0);
    if (!PyCallable_Check(c->sha)) {
        PyErr_SetString(PyExc_TypeError, "configure: crypto[0] must be hashlib.sha256");
        return -1;
    }
    void *p = pointer_arg(PyTuple_GET_ITEM(pointers, 1));
    if (p == NULL) return -1;
    c->aead = (aead_decrypt_fn)p;
    for (int i = 0; i < 4; i++) {
        PyObject *t = PyTuple_GET_ITEM(types, i);
        /* Payload, Op and Timestamp are NamedTuples: items are written into them */
        if (!PyType_Check(t)
            || (i > 0 && !PyType_FastSubclass((PyTypeObject *)t, Py_TPFLAGS_TUPLE_SUBCLASS))) {
            PyErr_SetString(PyExc_TypeError,
                            "configure: types must be (Envelope, tuple subclass x3)");
            return -1;
        }
        c->types[i] = (PyTypeObject *)t;
    }
    for (int i = 0; i < N_ENV_FIELDS; i++) {
        c->setters[i] = PyTuple_GET_ITEM(setters, i);
        if (!is_slot_of(c->setters[i], c->types[0])) {
            PyErr_SetString(PyExc_TypeError, "configure: setters must be Envelope's slots");
            return -1;
        }
    }
    for (int i = 0; i < 2; i++) c->kinds[i] = PyTuple_GET_ITEM(kinds, i);
    c->version = version;
    for (int i = 0; i < 8; i++)
        if ((c->limits[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(limits, i))) < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "configure: negative limit");
            return -1;
        }
    if (c->limits[2] > 256) { /* read_ops keeps the field names of a delta on the stack */
        PyErr_SetString(PyExc_ValueError, "configure: at most 256 ops per delta supported");
        return -1;
    }
    PyObject *doc_state = PyTuple_GET_ITEM(docs, 0);
    if (!PyType_Check(doc_state)) {
        PyErr_SetString(PyExc_TypeError, "configure: docs must be (DocState, fields, tomb)");
        return -1;
    }
    c->doc_state = (PyTypeObject *)doc_state;
    for (int i = 0; i < 2; i++) {
        c->doc_setters[i] = PyTuple_GET_ITEM(docs, i + 1);
        if (!is_slot_of(c->doc_setters[i], c->doc_state)) {
            PyErr_SetString(PyExc_TypeError, "configure: DocState setters must be its slots");
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(configure_doc,
"configure(crypto, types, setters, kinds, version, limits, docs)\n\n"
"crypto: (hashlib.sha256, address of libsodium's\n"
"crypto_aead_xchacha20poly1305_ietf_decrypt); types: (Envelope, Payload, Op, Timestamp);\n"
"setters: Envelope's 12 slot descriptors in field order; kinds: (Kind.DATA,\n"
"Kind.CONTROL); limits: (envelope, payload, ops, coll chars, doc chars, field chars,\n"
"hlc node bytes, hlc counter); docs: (DocState, its fields slot, its tomb slot).\n"
"All or nothing: on an error nothing changes.");

static PyObject *configure(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *pointers, *types, *setters, *kinds, *version, *limits, *docs;
    config c;
    if (!PyArg_ParseTuple(args, "O!O!O!O!OO!O!", &PyTuple_Type, &pointers, &PyTuple_Type,
                          &types, &PyTuple_Type, &setters, &PyTuple_Type, &kinds, &version,
                          &PyTuple_Type, &limits, &PyTuple_Type, &docs)
        || check_config(pointers, types, setters, kinds, version, limits, docs, &c) < 0)
        return NULL;
    PyObject *zero = PyLong_FromLong(0), *one = PyLong_FromLong(1);
    PyObject *digest = PyUnicode_InternFromString("digest");
    if (zero == NULL || one == NULL || digest == NULL) {
        Py_XDECREF(zero);
        Py_XDECREF(one);
        Py_XDECREF(digest);
        return NULL;
    }
    /* all checked and allocated: publish (nothing below can fail) */
    Py_XSETREF(int_zero, zero);
    Py_XSETREF(int_one, one);
    Py_XSETREF(digest_name, digest);
    Py_XSETREF(sha256_new, Py_NewRef(c.sha));
    Py_XSETREF(envelope_type, (PyTypeObject *)Py_NewRef(c.types[0]));
    Py_XSETREF(payload_type, (PyTypeObject *)Py_NewRef(c.types[1]));
    Py_XSETREF(op_type, (PyTypeObject *)Py_NewRef(c.types[2]));
    Py_XSETREF(timestamp_type, (PyTypeObject *)Py_NewRef(c.types[3]));
    for (int i = 0; i < N_ENV_FIELDS; i++) Py_XSETREF(env_setters[i], Py_NewRef(c.setters[i]));
    Py_XSETREF(kind_data, Py_NewRef(c.kinds[0]));
    Py_XSETREF(kind_control, Py_NewRef(c.kinds[1]));
    Py_XSETREF(version_obj, Py_NewRef(c.version));
    Py_XSETREF(doc_state_type, (PyTypeObject *)Py_NewRef(c.doc_state));
    for (int i = 0; i < 2; i++) Py_XSETREF(doc_setters[i], Py_NewRef(c.doc_setters[i]));
    max_envelope = c.limits[0];
    max_payload = c.limits[1];
    max_ops = c.limits[2];
    max_coll = c.limits[3];
    max_doc = c.limits[4];
    max_field = c.limits[5];
    max_node = c.limits[6];
    max_counter = (unsigned long long)c.limits[7];
    aead_decrypt = c.aead;
    Py_RETURN_NONE;
}

/* -- known-answer hooks (accel.py runs them before handing out any function) ---------- */
PyDoc_STRVAR(sha256_doc,
"sha256_digest(data: bytes) -> bytes: SHA-256 as envelope ids are hashed here (self-test).");

static PyObject *sha256_digest(PyObject *Py_UNUSED(module), PyObject *data) {
    if (sha256_new == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not configured");
        return NULL;
    }
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "sha256_digest(data: bytes)");
        return NULL;
    }
    return sha256(data);
}

PyDoc_STRVAR(aead_open_doc,
"aead_open(ciphertext, aad, nonce, key) -> bytes | None: XChaCha20-Poly1305 decryption\n"
"through the configured pointer, None if the tag does not verify (self-test).");

static PyObject *aead_open(PyObject *Py_UNUSED(module), PyObject *const *args,
                           Py_ssize_t nargs) {
    if (aead_decrypt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not configured");
        return NULL;
    }
    if (nargs != 4 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])
        || !PyBytes_CheckExact(args[2]) || !PyBytes_CheckExact(args[3])
        || PyBytes_GET_SIZE(args[0]) < TAG_BYTES || PyBytes_GET_SIZE(args[2]) != NONCE_BYTES
        || PyBytes_GET_SIZE(args[3]) != KEY_BYTES) {
        PyErr_SetString(PyExc_TypeError, "aead_open(ciphertext, aad, nonce: 24 bytes, key: 32 bytes)");
        return NULL;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]) - TAG_BYTES;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) return NULL;
    unsigned long long got = 0;
    int rc = aead_decrypt((unsigned char *)PyBytes_AS_STRING(out), &got, NULL,
                          (const unsigned char *)PyBytes_AS_STRING(args[0]),
                          (unsigned long long)PyBytes_GET_SIZE(args[0]),
                          (const unsigned char *)PyBytes_AS_STRING(args[1]),
                          (unsigned long long)PyBytes_GET_SIZE(args[1]),
                          (const unsigned char *)PyBytes_AS_STRING(args[2]),
                          (const unsigned char *)PyBytes_AS_STRING(args[3]));
    if (rc != 0 || got != (unsigned long long)n) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS, configure_doc},
    {"decode_envelope", decode_envelope, METH_O,
     "Envelope of canonical envelope bytes, or None (then the Python path decides)."},
    {"open_payload", (PyCFunction)(void (*)(void))open_payload, METH_FASTCALL,
     "open_payload(raw, key[, schema, max_wall_ms]): Payload of a DATA envelope under a\n"
     "group key (that fits schema and is not ahead of max_wall_ms), or None (Python decides)."},
    {"chain_runs", (PyCFunction)(void (*)(void))chain_runs, METH_FASTCALL, chain_runs_doc},
    {"open_all", (PyCFunction)(void (*)(void))open_all, METH_FASTCALL, open_all_doc},
    {"merge_all", (PyCFunction)(void (*)(void))merge_all, METH_FASTCALL, merge_all_doc},
    {"lww_apply", (PyCFunction)(void (*)(void))lww_apply, METH_FASTCALL, lww_apply_doc},
    {"load_rows", (PyCFunction)(void (*)(void))load_rows, METH_FASTCALL, load_rows_doc},
    {"fill_empty", (PyCFunction)(void (*)(void))fill_empty, METH_FASTCALL, fill_empty_doc},
    {"load_state", (PyCFunction)(void (*)(void))load_state, METH_FASTCALL, load_state_doc},
    {"doc_rows", (PyCFunction)(void (*)(void))doc_rows, METH_FASTCALL, doc_rows_doc},
    {"state_row", (PyCFunction)(void (*)(void))state_row, METH_FASTCALL, state_row_doc},
    {"sha256_digest", sha256_digest, METH_O, sha256_doc},
    {"aead_open", (PyCFunction)(void (*)(void))aead_open, METH_FASTCALL, aead_open_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mycelium._accel",
    "Compiled twins of the ingest hot path (see mycelium/accel.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__accel(void) { return PyModule_Create(&module); }
