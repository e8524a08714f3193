/*
 * tq_adapter.c - a TurboQuant implementation in C (C99, standard library only) behind the
 * tqref conformance protocol (docs/conformance-protocol.md).
 *
 * Build:  cc -std=c99 -O2 -ffp-contract=off -o tq_adapter tq_adapter.c -lm
 * Run:    tqref conformance run --cmd ./tq_adapter
 *
 * It is written from tqref's documentation (docs/porting.md and the module docstrings of
 * tqref/reference), one function per rung of the porting ladder: prng -> ordered_dot ->
 * split_norm -> fwht / rotations -> nearest_index -> packing -> mse -> QJL -> prod.
 * The codebook is not solved here: requests carry it (ports load frozen tables).
 *
 * Exactness notes:
 *   - -ffp-contract=off: a*b + c must not become an FMA in the ordered sums.
 *   - FLT_EVAL_METHOD must be 0 (float arithmetic in float): true for x86-64 SSE, AArch64.
 *   - sqrtf and float division are correctly rounded (IEEE 754); frexpf/ldexpf are exact.
 *
 * Protocol I/O: one JSON object per line. Requests are flat objects whose values are strings
 * or integers, so a 100-line parser suffices (no JSON library).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LANES 32
#define ROUNDS 3
#define STREAM_ROTATION_SIGNS 1
#define STREAM_QJL_RADEMACHER 5

static const uint64_t GOLDEN = 0x9E3779B97F4A7C15ULL;
static const double PI = 3.14159265358979323846;

/* ------------------------------------------------------------------ error handling */

static char g_error[512];
static int g_unsupported;

static int fail(const char *msg) {
    snprintf(g_error, sizeof g_error, "%s", msg);
    return -1;
}

static int unsupported(const char *msg) {
    g_unsupported = 1;
    return fail(msg);
}

/* ------------------------------------------------------------------ minimal JSON request */

#define MAX_FIELDS 64
typedef struct {
    char *key[MAX_FIELDS];
    char *val[MAX_FIELDS]; /* string content, or the integer's text */
    int is_str[MAX_FIELDS];
    int n;
} Request;

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

/* parse a JSON string starting at the opening quote; returns a malloc'd copy (escapes kept
   simple: \" \\ \/ \n \t \r \b \f; \uXXXX becomes '?'), advances *pp past the closing quote */
static char *parse_string(const char **pp) {
    const char *p = *pp + 1;
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            char e = *p++;
            if (e == 'n') c = '\n';
            else if (e == 't') c = '\t';
            else if (e == 'r') c = '\r';
            else if (e == 'b') c = '\b';
            else if (e == 'f') c = '\f';
            else if (e == 'u') { int k; for (k = 0; k < 4 && *p; k++) p++; c = '?'; }
            else if (e == '\0') { free(out); return NULL; }
            else c = e;
        }
        if (len + 1 >= cap) {
            char *grown = realloc(out, cap *= 2);
            if (!grown) { free(out); return NULL; }
            out = grown;
        }
        out[len++] = c;
    }
    if (*p != '"') { free(out); return NULL; }
    out[len] = '\0';
    *pp = p + 1;
    return out;
}

static void free_request(Request *r) {
    int i;
    for (i = 0; i < r->n; i++) { free(r->key[i]); free(r->val[i]); }
    r->n = 0;
}

static int parse_request(const char *line, Request *r) {
    const char *p = skip_ws(line);
    r->n = 0;
    if (*p != '{') return fail("request is not a JSON object");
    p = skip_ws(p + 1);
    if (*p == '}') return 0;
    for (;;) {
        char *key, *val;
        int is_str;
        if (*p != '"' || r->n >= MAX_FIELDS) return fail("malformed request (key)");
        key = parse_string(&p);
        if (!key) return fail("malformed request (key string)");
        p = skip_ws(p);
        if (*p != ':') { free(key); return fail("malformed request (colon)"); }
        p = skip_ws(p + 1);
        if (*p == '"') {
            val = parse_string(&p);
            is_str = 1;
        } else { /* integer, true/false/null, or a nested value we do not need */
            const char *start = p;
            int depth = 0;
            while (*p && (depth > 0 || (*p != ',' && *p != '}'))) {
                if (*p == '[' || *p == '{') depth++;
                if (*p == ']' || *p == '}') depth--;
                p++;
            }
            val = malloc((size_t)(p - start) + 1);
            if (val) { memcpy(val, start, (size_t)(p - start)); val[p - start] = '\0'; }
            is_str = 0;
        }
        if (!val) { free(key); return fail("malformed request (value)"); }
        r->key[r->n] = key; r->val[r->n] = val; r->is_str[r->n] = is_str; r->n++;
        p = skip_ws(p);
        if (*p == ',') { p = skip_ws(p + 1); continue; }
        if (*p == '}') return 0;
        return fail("malformed request (separator)");
    }
}

static const char *get(const Request *r, const char *key) {
    int i;
    for (i = 0; i < r->n; i++) if (strcmp(r->key[i], key) == 0) return r->val[i];
    return NULL;
}

static int get_int(const Request *r, const char *key, long *out) {
    const char *v = get(r, key);
    char *end;
    if (!v) { snprintf(g_error, sizeof g_error, "missing field %s", key); return -1; }
    *out = strtol(v, &end, 10);
    if (end == v) { snprintf(g_error, sizeof g_error, "field %s: not an integer", key); return -1; }
    return 0;
}

static int get_u64(const Request *r, const char *key, uint64_t *out) {
    const char *v = get(r, key);
    if (!v || strncmp(v, "0x", 2) != 0) { snprintf(g_error, sizeof g_error, "field %s: expected 0x...", key); return -1; }
    *out = strtoull(v + 2, NULL, 16);
    return 0;
}

/* hex -> bytes (malloc'd); *n gets the byte count */
static unsigned char *get_bytes(const Request *r, const char *key, size_t *n) {
    const char *v = get(r, key);
    size_t len, i;
    unsigned char *out;
    if (!v) { snprintf(g_error, sizeof g_error, "missing field %s", key); return NULL; }
    len = strlen(v);
    if (len % 2) { snprintf(g_error, sizeof g_error, "field %s: odd hex length", key); return NULL; }
    out = malloc(len / 2 + 1);
    if (!out) return NULL;
    for (i = 0; i < len / 2; i++) {
        unsigned int byte;
        if (sscanf(v + 2 * i, "%2x", &byte) != 1) { free(out); fail("bad hex"); return NULL; }
        out[i] = (unsigned char)byte;
    }
    *n = len / 2;
    return out;
}

/* little-endian decoding (independent of the host's byte order) */
static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static uint64_t le64(const unsigned char *b) { return (uint64_t)le32(b) | (uint64_t)le32(b + 4) << 32; }
static float f32_of(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bits_of(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* float32 array field; expects `count` elements (count < 0: any) */
static float *get_f32(const Request *r, const char *key, long count, long *got) {
    size_t n, i;
    unsigned char *b = get_bytes(r, key, &n);
    float *out;
    if (!b) return NULL;
    if (n % 4 || (count >= 0 && (long)(n / 4) != count)) {
        free(b);
        snprintf(g_error, sizeof g_error, "field %s: expected %ld float32 values", key, count);
        return NULL;
    }
    out = malloc((n / 4 + 1) * sizeof *out);
    for (i = 0; out && i < n / 4; i++) out[i] = f32_of(le32(b + 4 * i));
    if (got) *got = (long)(n / 4);
    free(b);
    return out;
}

static double *get_f64(const Request *r, const char *key, long count) {
    size_t n, i;
    unsigned char *b = get_bytes(r, key, &n);
    double *out;
    if (!b) return NULL;
    if (n % 8 || (count >= 0 && (long)(n / 8) != count)) {
        free(b);
        snprintf(g_error, sizeof g_error, "field %s: expected %ld float64 values", key, count);
        return NULL;
    }
    out = malloc((n / 8 + 1) * sizeof *out);
    for (i = 0; out && i < n / 8; i++) { uint64_t u = le64(b + 8 * i); memcpy(&out[i], &u, 8); }
    free(b);
    return out;
}

/* float16 <-> float32 (round to nearest even) for norms stored as float16 */
static uint16_t f16_bits(float f) {
    uint32_t x = bits_of(f), sign = (x >> 16) & 0x8000u, mant = x & 0x7FFFFFu;
    int exp = (int)((x >> 23) & 0xFF) - 127 + 15;
    if (((x >> 23) & 0xFF) == 0xFF) return (uint16_t)(sign | 0x7C00u | (mant ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7C00u);
    if (exp <= 0) { /* subnormal half or zero */
        uint32_t m, shift, half, rest, q;
        if (exp < -10) return (uint16_t)sign;
        m = mant | 0x800000u;
        shift = (uint32_t)(14 - exp);
        q = m >> shift;
        rest = m & ((1u << shift) - 1);
        half = 1u << (shift - 1);
        if (rest > half || (rest == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    } else {
        uint32_t q = ((uint32_t)exp << 10) | (mant >> 13), rest = mant & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (q & 1))) q++; /* may carry into the exponent: fine */
        return (uint16_t)(sign | q);
    }
}

static float f32_of_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FFu;
    if (exp == 0) { float v = ldexpf((float)mant, -24); return sign ? -v : v; }
    if (exp == 31) return f32_of(sign | 0x7F800000u | (mant << 13));
    return f32_of(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

/* ------------------------------------------------------------------ output */

static char *g_out;
static size_t g_out_len, g_out_cap;

static void out_raw(const char *s) {
    size_t n = strlen(s);
    if (g_out_len + n + 1 > g_out_cap) {
        size_t cap = g_out_cap ? g_out_cap : 4096;
        while (g_out_len + n + 1 > cap) cap *= 2;
        g_out = realloc(g_out, cap);
        g_out_cap = cap;
    }
    memcpy(g_out + g_out_len, s, n + 1);
    g_out_len += n;
}

static int g_first_output;

static void out_key(const char *name) {
    out_raw(g_first_output ? "\"" : ",\"");
    g_first_output = 0;
    out_raw(name);
    out_raw("\":\"");
}

static void out_hex_bytes(const unsigned char *b, size_t n) {
    static const char digits[] = "0123456789abcdef";
    char pair[3] = {0, 0, 0};
    size_t i;
    for (i = 0; i < n; i++) { pair[0] = digits[b[i] >> 4]; pair[1] = digits[b[i] & 15]; out_raw(pair); }
}

static void out_bytes(const char *name, const unsigned char *b, size_t n) {
    out_key(name); out_hex_bytes(b, n); out_raw("\"");
}

static void out_f32(const char *name, const float *v, long n) {
    long i;
    out_key(name);
    for (i = 0; i < n; i++) {
        uint32_t u = bits_of(v[i]);
        unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
        out_hex_bytes(b, 4);
    }
    out_raw("\"");
}

static void out_f64(const char *name, const double *v, long n) {
    long i;
    int k;
    out_key(name);
    for (i = 0; i < n; i++) {
        uint64_t u;
        unsigned char b[8];
        memcpy(&u, &v[i], 8);
        for (k = 0; k < 8; k++) b[k] = (unsigned char)(u >> (8 * k));
        out_hex_bytes(b, 8);
    }
    out_raw("\"");
}

static void out_u64(const char *name, const uint64_t *v, long n) {
    long i;
    int k;
    out_key(name);
    for (i = 0; i < n; i++) {
        unsigned char b[8];
        for (k = 0; k < 8; k++) b[k] = (unsigned char)(v[i] >> (8 * k));
        out_hex_bytes(b, 8);
    }
    out_raw("\"");
}

/* a norm in the requested storage dtype */
static void out_norm(const char *name, float v, int f16) {
    if (f16) {
        uint16_t h = f16_bits(v);
        unsigned char b[2] = {(unsigned char)h, (unsigned char)(h >> 8)};
        out_bytes(name, b, 2);
    } else {
        out_f32(name, &v, 1);
    }
}

/* ------------------------------------------------------------------ rung 1: PRNG */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static uint64_t stream_key(uint64_t seed, uint64_t stream) { return mix64(seed + GOLDEN * (stream + 1)); }
static uint64_t raw_at(uint64_t key, uint64_t i) { return mix64(key + GOLDEN * (i + 1)); }
static float rademacher(uint64_t key, uint64_t i) { return (raw_at(key, i) >> 63) ? -1.0f : 1.0f; }

/* ------------------------------------------------------------------ rung 2: ordered sums */

/* 32 lanes, lane l sums p_j for j = l, l+32, ... (from the first term), then butterfly */
static float ordered_dot(const float *a, const float *b, long n) {
    float s[LANES];
    long j;
    int l, w;
    for (l = 0; l < LANES; l++) s[l] = 0.0f;
    for (j = 0; j < n; j++) {
        float p = a[j] * b[j];
        if (j < LANES) s[j] = p; else s[j % LANES] = s[j % LANES] + p;
    }
    for (w = LANES / 2; w >= 1; w /= 2)
        for (l = 0; l < w; l++) s[l] = s[l] + s[l + w];
    return s[0];
}

/* returns the norm (float32, +inf on overflow); u gets x / ||x|| (zeros for a zero vector) */
static float split_norm(const float *x, long d, float *u) {
    float m = 0.0f, ns, norm;
    long j;
    int e = 0;
    float *xs = malloc((size_t)d * sizeof *xs);
    for (j = 0; j < d; j++) if (fabsf(x[j]) > m) m = fabsf(x[j]);
    if (m == 0.0f) {
        for (j = 0; j < d; j++) u[j] = 0.0f;
        free(xs);
        return 0.0f;
    }
    frexpf(m, &e);
    for (j = 0; j < d; j++) xs[j] = ldexpf(x[j], -e);
    ns = sqrtf(ordered_dot(xs, xs, d));
    for (j = 0; j < d; j++) u[j] = xs[j] / ns;
    norm = ldexpf(ns, e);
    free(xs);
    return norm;
}

/* ------------------------------------------------------------------ rung 3: rotations */

static void fwht(float *x, long n) {
    long h, i, j;
    float scale = 1.0f / sqrtf((float)n);
    for (h = 1; h < n; h *= 2)
        for (i = 0; i < n; i += 2 * h)
            for (j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    for (i = 0; i < n; i++) x[i] = x[i] * scale;
}

static long block_of(long d) { long m = 1; while (2 * m <= d) m *= 2; return m; }

/* Steps s = 0 .. S-1: multiply the whole vector by fresh signs (stream 1, indices s*d .. s*d+d-1),
   then the normalised WHT of one block. d a power of two: S = 3 steps on [0, d). Otherwise
   m = largest power of two below d and S = 6 steps alternating [0, m) and [d - m, d).
   The inverse undoes the steps in reverse order (block transform, then the signs). */
static void hadamard(float *y, long d, uint64_t seed, int inverse) {
    uint64_t key = stream_key(seed, STREAM_ROTATION_SIGNS);
    long m = block_of(d), j;
    int steps = (m == d) ? ROUNDS : 2 * ROUNDS, k;
    for (k = 0; k < steps; k++) {
        int s = inverse ? steps - 1 - k : k;
        long lo = (m == d || s % 2 == 0) ? 0 : d - m;
        if (!inverse) {
            for (j = 0; j < d; j++) y[j] = y[j] * rademacher(key, (uint64_t)s * (uint64_t)d + (uint64_t)j);
            fwht(y + lo, m);
        } else {
            fwht(y + lo, m);
            for (j = 0; j < d; j++) y[j] = y[j] * rademacher(key, (uint64_t)s * (uint64_t)d + (uint64_t)j);
        }
    }
}

/* y = P x (transpose = 0) or P^T x (transpose = 1) with ordered dot products */
static void matvec(const float *p, const float *x, float *y, long d, int transpose) {
    float *row = malloc((size_t)d * sizeof *row);
    long i, j;
    for (i = 0; i < d; i++) {
        for (j = 0; j < d; j++) row[j] = transpose ? p[j * d + i] : p[i * d + j];
        y[i] = ordered_dot(row, x, d);
    }
    free(row);
}

typedef struct {
    long d;
    uint64_t seed;
    float *haar; /* NULL for the Hadamard rotation */
} Rotation;

static void rotate(const Rotation *rot, const float *x, float *y, int inverse) {
    if (rot->haar) {
        matvec(rot->haar, x, y, rot->d, inverse);
    } else {
        memcpy(y, x, (size_t)rot->d * sizeof *y);
        hadamard(y, rot->d, rot->seed, inverse);
    }
}

/* ------------------------------------------------------------------ rung 4: codebook lookup */

static unsigned nearest_index(float v, const double *boundaries, long nb) {
    unsigned count = 0;
    long k;
    if (v != v) return 0; /* NaN */
    for (k = 0; k < nb; k++) if (boundaries[k] < (double)v) count++;
    return count;
}

/* ------------------------------------------------------------------ rung 5: packing */

static long packed_size(long count, long bits) { return (count * bits + 7) / 8; }

static void pack(const unsigned char *idx, long count, long bits, unsigned char *out) {
    long j, k, pos = 0;
    memset(out, 0, (size_t)packed_size(count, bits));
    for (j = 0; j < count; j++)
        for (k = 0; k < bits; k++, pos++)
            if ((idx[j] >> k) & 1) out[pos / 8] |= (unsigned char)(1u << (pos % 8));
}

static void unpack(const unsigned char *in, long count, long bits, unsigned char *idx) {
    long j, k, pos = 0;
    for (j = 0; j < count; j++) {
        unsigned v = 0;
        for (k = 0; k < bits; k++, pos++) v |= (unsigned)((in[pos / 8] >> (pos % 8)) & 1) << k;
        idx[j] = (unsigned char)v;
    }
}

/* ------------------------------------------------------------------ operations */

typedef struct {
    long d, bits, m;
    int f16, prod;
    Rotation rot;
    double *boundaries;
    float *centroids, *queries, *proj;
    double scale, shrinkage;
} Params;

static void free_params(Params *p) {
    free(p->boundaries); free(p->centroids); free(p->queries); free(p->proj); free(p->rot.haar);
    memset(p, 0, sizeof *p);
}

/* read the shared parameters of the mse / qjl / prod operations */
static int read_params(const Request *r, Params *p, int prod, int need_boundaries, int need_centroids) {
    const char *rotation = get(r, "rotation"), *norm_dtype = get(r, "normDtype");
    long k;
    memset(p, 0, sizeof *p);
    p->prod = prod;
    if (get_int(r, "dim", &p->d) || p->d < 2) return fail("dim: expected an integer >= 2");
    if (get(r, "bits") && get_int(r, "bits", &p->bits)) return -1;
    if (get_u64(r, "seed", &p->rot.seed)) return -1;
    p->rot.d = p->d;
    p->f16 = norm_dtype && strcmp(norm_dtype, "float16") == 0;
    k = (1L << (prod ? p->bits - 1 : p->bits));
    if (rotation && strcmp(rotation, "haar") == 0) {
        if (prod) return unsupported("prod with a Haar rotation");
        if (!(p->rot.haar = get_f32(r, "matrix", p->d * p->d, NULL))) return -1;
    }
    if (need_boundaries && !(p->boundaries = get_f64(r, "boundaries", k - 1))) return -1;
    if (need_centroids && !(p->centroids = get_f32(r, "centroids", k, NULL))) return -1;
    if (get(r, "queries")) {
        if (get_int(r, "m", &p->m) || !(p->queries = get_f32(r, "queries", p->m * p->d, NULL))) return -1;
    }
    if (get(r, "scale")) {
        double *s = get_f64(r, "scale", 1);
        if (!s) return -1;
        p->scale = s[0];
        free(s);
    }
    if (get(r, "shrinkage")) {
        double *s = get_f64(r, "shrinkage", 1);
        if (!s) return -1;
        p->shrinkage = s[0];
        free(s);
    }
    if (get(r, "projection")) {
        const char *kind = get(r, "projection");
        long i;
        if (strcmp(kind, "rademacher") == 0) {
            uint64_t key = stream_key(p->rot.seed, STREAM_QJL_RADEMACHER);
            p->proj = malloc((size_t)(p->d * p->d) * sizeof *p->proj);
            for (i = 0; i < p->d * p->d; i++) p->proj[i] = rademacher(key, (uint64_t)i);
        } else if (!(p->proj = get_f32(r, "matrix", p->d * p->d, NULL))) {
            return -1;
        }
    }
    return 0;
}

/* a stored norm (float32 or float16 field) as float32 */
static int read_norm(const Request *r, const char *key, int f16, float *out) {
    size_t n;
    unsigned char *b = get_bytes(r, key, &n);
    if (!b) return -1;
    if (n != (size_t)(f16 ? 2 : 4)) { free(b); return fail("norm: wrong size"); }
    *out = f16 ? f32_of_f16((uint16_t)(b[0] | b[1] << 8)) : f32_of(le32(b));
    free(b);
    return 0;
}

static int check_norm(float norm, int f16) {
    if (!(norm <= FLT_MAX)) return fail("x: the norm overflows float32");
    if (f16) {
        if (norm > 65504.0f) return fail("x: the norm does not fit float16");
        if (norm > 0.0f && f32_of_f16(f16_bits(norm)) == 0.0f) return fail("x: the norm underflows float16");
    }
    return 0;
}

/* mse stage: unit vector, rotated y, indices; returns the norm */
static int quantize_stage(const Params *p, long bits, const float *x, float *y, unsigned char *idx, float *norm) {
    long j;
    float *u = malloc((size_t)p->d * sizeof *u);
    for (j = 0; j < p->d; j++)
        if (!(x[j] == x[j]) || fabsf(x[j]) > FLT_MAX) { free(u); return fail("x: expected finite values"); }
    *norm = split_norm(x, p->d, u);
    rotate(&p->rot, u, y, 0);
    for (j = 0; j < p->d; j++) idx[j] = (unsigned char)nearest_index(y[j], p->boundaries, (1L << bits) - 1);
    free(u);
    return check_norm(*norm, p->f16);
}

static void sketch(const Params *p, const float *residual, unsigned char *signs, float *gamma) {
    unsigned char *bits = malloc((size_t)p->d);
    long i;
    for (i = 0; i < p->d; i++) bits[i] = ordered_dot(p->proj + i * p->d, residual, p->d) >= 0.0f;
    pack(bits, p->d, 1, signs);
    *gamma = sqrtf(ordered_dot(residual, residual, p->d));
    free(bits);
}

/* <S q, z> in float32 (any order is within the stated tolerance) */
static float qjl_dot(const Params *p, const float *q, const unsigned char *signs) {
    unsigned char *z = malloc((size_t)p->d);
    float total = 0.0f;
    long i, j;
    unpack(signs, p->d, 1, z);
    for (i = 0; i < p->d; i++) {
        float sq = 0.0f;
        for (j = 0; j < p->d; j++) sq += p->proj[i * p->d + j] * q[j];
        total += z[i] ? sq : -sq;
    }
    free(z);
    return total;
}

static int op_prng(const Request *r, const char *op) {
    uint64_t seed, start = 0, key;
    long stream, count, i;
    if (get_u64(r, "seed", &seed) || get_int(r, "stream", &stream) || get_int(r, "count", &count)) return -1;
    if (strcmp(op, "prng_gaussian") != 0 && get_u64(r, "start", &start)) return -1;
    key = stream_key(seed, (uint64_t)stream);
    if (strcmp(op, "prng_raw") == 0) {
        uint64_t *v = malloc((size_t)(count + 1) * sizeof *v);
        for (i = 0; i < count; i++) v[i] = raw_at(key, start + (uint64_t)i);
        out_u64("key", &key, 1);
        out_u64("values", v, count);
        free(v);
    } else if (strcmp(op, "prng_rademacher") == 0) {
        unsigned char *s = malloc((size_t)count + 1);
        for (i = 0; i < count; i++) s[i] = (raw_at(key, start + (uint64_t)i) >> 63) ? 0xFF : 0x01;
        out_bytes("signs", s, (size_t)count);
        free(s);
    } else if (strcmp(op, "prng_uniform") == 0) {
        double *v = malloc((size_t)(count + 1) * sizeof *v);
        for (i = 0; i < count; i++) v[i] = (double)(raw_at(key, start + (uint64_t)i) >> 11) * 0x1.0p-53;
        out_f64("values", v, count);
        free(v);
    } else {
        double *v = malloc((size_t)(count + 1) * sizeof *v);
        for (i = 0; i < count; i++) {
            double u1 = ((double)(raw_at(key, (uint64_t)(2 * i)) >> 11) + 1.0) * 0x1.0p-53;
            double u2 = (double)(raw_at(key, (uint64_t)(2 * i + 1)) >> 11) * 0x1.0p-53;
            v[i] = sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
        }
        out_f64("values", v, count);
        free(v);
    }
    return 0;
}

static int op_building_block(const Request *r, const char *op) {
    long n, d, i;
    if (strcmp(op, "ordered_dot") == 0) {
        float *a, *b, dot;
        if (get_int(r, "n", &n)) return -1;
        a = get_f32(r, "a", n, NULL);
        b = a ? get_f32(r, "b", n, NULL) : NULL;
        if (!b) { free(a); return -1; }
        dot = ordered_dot(a, b, n);
        out_f32("dot", &dot, 1);
        free(a); free(b);
        return 0;
    }
    if (strcmp(op, "fwht") == 0) {
        float *x;
        if (get_int(r, "n", &n) || n < 1 || (n & (n - 1))) return fail("n: expected a power of two");
        if (!(x = get_f32(r, "x", n, NULL))) return -1;
        fwht(x, n);
        out_f32("y", x, n);
        free(x);
        return 0;
    }
    if (get_int(r, "dim", &d)) return -1;
    if (strcmp(op, "split_norm") == 0) {
        float *x = get_f32(r, "x", d, NULL), *u, norm;
        if (!x) return -1;
        u = malloc((size_t)d * sizeof *u);
        norm = split_norm(x, d, u);
        out_f32("norm", &norm, 1);
        out_f32("unit", u, d);
        free(x); free(u);
        return 0;
    }
    if (strcmp(op, "rotate_hadamard") == 0 || strcmp(op, "rotate_haar") == 0) {
        Rotation rot = {0, 0, NULL};
        float *x = get_f32(r, "x", d, NULL), *y;
        if (!x) return -1;
        rot.d = d;
        if (strcmp(op, "rotate_haar") == 0) {
            if (!(rot.haar = get_f32(r, "matrix", d * d, NULL))) { free(x); return -1; }
        } else if (get_u64(r, "seed", &rot.seed)) {
            free(x);
            return -1;
        }
        y = malloc((size_t)d * sizeof *y);
        rotate(&rot, x, y, 0);
        out_f32("forward", y, d);
        rotate(&rot, x, y, 1);
        out_f32("inverse", y, d);
        free(x); free(y); free(rot.haar);
        return 0;
    }
    (void)i;
    return unsupported("unknown operation");
}

static int op_index_packing(const Request *r, const char *op) {
    long bits, count, n, i;
    if (strcmp(op, "nearest_index") == 0) {
        double *b;
        float *v;
        unsigned char *idx;
        if (get_int(r, "bits", &bits) || get_int(r, "n", &n)) return -1;
        if (!(b = get_f64(r, "boundaries", (1L << bits) - 1))) return -1;
        if (!(v = get_f32(r, "values", n, NULL))) { free(b); return -1; }
        idx = malloc((size_t)n + 1);
        for (i = 0; i < n; i++) idx[i] = (unsigned char)nearest_index(v[i], b, (1L << bits) - 1);
        out_bytes("indices", idx, (size_t)n);
        free(b); free(v); free(idx);
        return 0;
    }
    if (get_int(r, "bits", &bits) || get_int(r, "count", &count)) return -1;
    if (bits < 1 || bits > 8) return fail("bits: expected 1..8");
    if (strcmp(op, "pack") == 0) {
        size_t got;
        unsigned char *idx = get_bytes(r, "indices", &got), *out;
        if (!idx) return -1;
        if ((long)got != count) { free(idx); return fail("indices: wrong count"); }
        out = malloc((size_t)packed_size(count, bits) + 1);
        pack(idx, count, bits, out);
        out_bytes("packed", out, (size_t)packed_size(count, bits));
        free(idx); free(out);
        return 0;
    } else {
        size_t got;
        unsigned char *in = get_bytes(r, "packed", &got), *idx;
        if (!in) return -1;
        if ((long)got != packed_size(count, bits)) { free(in); return fail("packed: wrong length"); }
        idx = malloc((size_t)count + 1);
        unpack(in, count, bits, idx);
        out_bytes("indices", idx, (size_t)count);
        free(in); free(idx);
        return 0;
    }
}

static int op_mse(const Request *r, const char *op) {
    Params p;
    int rc = 0;
    int quantize = strcmp(op, "mse_quantize") == 0;
    long j, i, nb;
    if (read_params(r, &p, 0, quantize, !quantize)) { free_params(&p); return -1; }
    nb = packed_size(p.d, p.bits);
    if (quantize) {
        float *x = get_f32(r, "x", p.d, NULL), *y = malloc((size_t)p.d * sizeof *y), norm;
        unsigned char *idx = malloc((size_t)p.d), *packed = malloc((size_t)nb + 1);
        if (!x) rc = -1;
        else if (quantize_stage(&p, p.bits, x, y, idx, &norm)) rc = -1;
        else {
            pack(idx, p.d, p.bits, packed);
            out_norm("norm", norm, p.f16);
            out_bytes("packed", packed, (size_t)nb);
            out_bytes("indices", idx, (size_t)p.d);
            out_f32("rotated", y, p.d);
        }
        free(x); free(y); free(idx); free(packed);
    } else {
        size_t got;
        unsigned char *packed = get_bytes(r, "packed", &got), *idx = malloc((size_t)p.d);
        float norm, *yhat = malloc((size_t)p.d * sizeof *yhat), *xhat = malloc((size_t)p.d * sizeof *xhat);
        if (!packed || (long)got != nb || read_norm(r, "norm", p.f16, &norm)) rc = packed ? fail("bad codes") : -1;
        else {
            unpack(packed, p.d, p.bits, idx);
            for (j = 0; j < p.d; j++) yhat[j] = p.centroids[idx[j]];
            if (strcmp(op, "mse_dequantize") == 0) {
                rotate(&p.rot, yhat, xhat, 1);
                for (j = 0; j < p.d; j++) xhat[j] = xhat[j] * norm;
                out_f32("xhat", xhat, p.d);
            } else {
                float *est = malloc((size_t)(2 * p.m + 1) * sizeof *est), *qrot = malloc((size_t)p.d * sizeof *qrot);
                for (i = 0; i < p.m; i++) {
                    float dot = 0.0f;
                    rotate(&p.rot, p.queries + i * p.d, qrot, 0);
                    for (j = 0; j < p.d; j++) dot += qrot[j] * yhat[j];
                    est[i] = dot * norm;
                    est[p.m + i] = est[i] / (float)p.shrinkage;
                }
                out_f32("estimates", est, p.m);
                out_f32("estimatesUnbiased", est + p.m, p.m);
                free(est); free(qrot);
            }
        }
        free(packed); free(idx); free(yhat); free(xhat);
    }
    free_params(&p);
    return rc;
}

static int op_qjl(const Request *r, const char *op) {
    Params p;
    int rc = 0;
    long i, nbytes;
    if (read_params(r, &p, 0, 0, 0)) { free_params(&p); return -1; }
    nbytes = packed_size(p.d, 1);
    if (strcmp(op, "qjl_sketch") == 0) {
        float *res = get_f32(r, "residual", p.d, NULL), gamma;
        unsigned char *signs = malloc((size_t)nbytes + 1);
        if (!res) rc = -1;
        else {
            sketch(&p, res, signs, &gamma);
            out_bytes("signs", signs, (size_t)nbytes);
            out_f32("gamma", &gamma, 1);
        }
        free(res); free(signs);
    } else {
        size_t got;
        unsigned char *signs = get_bytes(r, "signs", &got);
        float gamma, *est = malloc((size_t)(p.m + 1) * sizeof *est);
        if (!signs || (long)got != nbytes || read_norm(r, "gamma", 0, &gamma)) rc = signs ? fail("bad signs") : -1;
        else {
            for (i = 0; i < p.m; i++) est[i] = qjl_dot(&p, p.queries + i * p.d, signs) * ((float)p.scale * gamma);
            out_f32("estimates", est, p.m);
        }
        free(signs); free(est);
    }
    free_params(&p);
    return rc;
}

static int op_prod(const Request *r, const char *op) {
    Params p;
    int rc = 0;
    long j, i, nb, ns;
    if (read_params(r, &p, 1, strcmp(op, "prod_quantize") == 0, 1)) { free_params(&p); return -1; }
    nb = packed_size(p.d, p.bits - 1);
    ns = packed_size(p.d, 1);
    if (strcmp(op, "prod_quantize") == 0) {
        float *x = get_f32(r, "x", p.d, NULL), *y = malloc((size_t)p.d * sizeof *y), norm, gamma;
        unsigned char *idx = malloc((size_t)p.d), *packed = malloc((size_t)nb + 1), *signs = malloc((size_t)ns + 1);
        if (!x) rc = -1;
        else if (quantize_stage(&p, p.bits - 1, x, y, idx, &norm)) rc = -1;
        else {
            for (j = 0; j < p.d; j++) y[j] = y[j] - p.centroids[idx[j]]; /* residual, rotated domain */
            sketch(&p, y, signs, &gamma);
            if (check_norm(gamma, p.f16)) rc = -1;
            else {
                pack(idx, p.d, p.bits - 1, packed);
                out_norm("norm", norm, p.f16);
                out_bytes("packed", packed, (size_t)nb);
                out_bytes("signs", signs, (size_t)ns);
                out_norm("gamma", gamma, p.f16);
                out_bytes("indices", idx, (size_t)p.d);
            }
        }
        free(x); free(y); free(idx); free(packed); free(signs);
    } else {
        size_t got_p, got_s;
        unsigned char *packed = get_bytes(r, "packed", &got_p), *signs = get_bytes(r, "signs", &got_s);
        unsigned char *idx = malloc((size_t)p.d), *z = malloc((size_t)p.d);
        float norm, gamma, *v = malloc((size_t)p.d * sizeof *v), *out = malloc((size_t)p.d * sizeof *out);
        if (!packed || !signs || (long)got_p != nb || (long)got_s != ns || read_norm(r, "norm", p.f16, &norm)
            || read_norm(r, "gamma", p.f16, &gamma)) rc = fail("bad codes");
        else {
            float kg = (float)p.scale * gamma;
            unpack(packed, p.d, p.bits - 1, idx);
            unpack(signs, p.d, 1, z);
            if (strcmp(op, "prod_dequantize") == 0) {
                for (j = 0; j < p.d; j++) {
                    float corr = 0.0f;
                    for (i = 0; i < p.d; i++) corr += z[i] ? p.proj[i * p.d + j] : -p.proj[i * p.d + j];
                    v[j] = p.centroids[idx[j]] + corr * kg;
                }
                rotate(&p.rot, v, out, 1);
                for (j = 0; j < p.d; j++) out[j] = out[j] * norm;
                out_f32("xhat", out, p.d);
            } else {
                float *est = malloc((size_t)(p.m + 1) * sizeof *est), *qrot = malloc((size_t)p.d * sizeof *qrot);
                for (i = 0; i < p.m; i++) {
                    float base = 0.0f;
                    rotate(&p.rot, p.queries + i * p.d, qrot, 0);
                    for (j = 0; j < p.d; j++) base += qrot[j] * p.centroids[idx[j]];
                    est[i] = (base + qjl_dot(&p, qrot, signs) * kg) * norm;
                }
                out_f32("estimates", est, p.m);
                free(est); free(qrot);
            }
        }
        free(packed); free(signs); free(idx); free(z); free(v); free(out);
    }
    free_params(&p);
    return rc;
}

static const char *OPS[] = {
    "prng_raw", "prng_rademacher", "prng_uniform", "prng_gaussian", "ordered_dot", "split_norm", "fwht",
    "rotate_hadamard", "rotate_haar", "nearest_index", "pack", "unpack", "mse_quantize", "mse_dequantize",
    "mse_inner_product", "qjl_sketch", "qjl_estimate", "prod_quantize", "prod_dequantize",
    "prod_inner_product", NULL};

static int dispatch(const Request *r, const char *op) {
    if (strncmp(op, "prng_", 5) == 0) return op_prng(r, op);
    if (strcmp(op, "nearest_index") == 0 || strcmp(op, "pack") == 0 || strcmp(op, "unpack") == 0)
        return op_index_packing(r, op);
    if (strncmp(op, "mse_", 4) == 0) return op_mse(r, op);
    if (strncmp(op, "qjl_", 4) == 0) return op_qjl(r, op);
    if (strncmp(op, "prod_", 5) == 0) return op_prod(r, op);
    return op_building_block(r, op);
}

/* one line of stdin, any length (malloc'd; NULL at end of input) */
static char *read_line(void) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int c;
    while (buf && (c = getchar()) != EOF) {
        if (c == '\n') break;
        if (len + 1 >= cap) { char *grown = realloc(buf, cap *= 2); if (!grown) { free(buf); return NULL; } buf = grown; }
        buf[len++] = (char)c;
    }
    if (buf && c == EOF && len == 0) { free(buf); return NULL; }
    if (buf) buf[len] = '\0';
    return buf;
}

static void write_json_string(const char *s) {
    char one[2] = {0, 0};
    out_raw("\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') out_raw("\\");
        if ((unsigned char)*s < 0x20) { out_raw(" "); continue; }
        one[0] = *s;
        out_raw(one);
    }
    out_raw("\"");
}

int main(void) {
    char *line;
    while ((line = read_line()) != NULL) {
        Request r;
        const char *op, *id;
        r.n = 0;
        g_out_len = 0;
        out_raw("");
        g_error[0] = '\0';
        g_unsupported = 0;
        if (parse_request(line, &r) != 0) {
            out_raw("{\"id\":null,\"error\":");
            write_json_string(g_error);
            out_raw("}");
        } else if ((op = get(&r, "op")) != NULL && strcmp(op, "hello") == 0) {
            int k;
            out_raw("{\"protocol\":\"tqref-conformance/1\",\"implementation\":\"tq_adapter.c (C99)\",\"ops\":[");
            for (k = 0; OPS[k]; k++) { out_raw(k ? ",\"" : "\""); out_raw(OPS[k]); out_raw("\""); }
            out_raw("]}");
        } else {
            id = get(&r, "id");
            out_raw("{\"id\":");
            write_json_string(id ? id : "");
            out_raw(",\"outputs\":{");
            g_first_output = 1;
            {
                size_t mark = g_out_len - strlen(",\"outputs\":{");
                if (!op || dispatch(&r, op) != 0) {
                    g_out_len = mark;
                    g_out[g_out_len] = '\0';
                    out_raw(g_unsupported ? ",\"unsupported\":" : ",\"error\":");
                    write_json_string(g_error[0] ? g_error : "failed");
                    out_raw("}");
                } else {
                    out_raw("}}");
                }
            }
        }
        fputs(g_out, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        free_request(&r);
        free(line);
    }
    free(g_out);
    return 0;
}
