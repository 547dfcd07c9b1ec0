/* The window form of the discretised mean (bsi/engine/discretised.py, `_window`) as one compiled loop.
 *
 * Built at install time on Linux x86-64 when a C compiler is there (setup.py; the build is optional
 * and the engine falls back to its PyTorch code without it).  Eager PyTorch writes and rereads a
 * (width, n) tensor for every step of the sum; here a block of elements' running sums stay in the
 * L1 cache, and the error function is taken from the exponential that the derivatives need anyway,
 * so each edge costs one exp and two polynomials.
 *
 * For element i, with w = 2 / (bins - 1), r = w / (s sqrt 2) and the window's first edge `first`
 * (every edge when width = bins - 1), z_k = (pos - first - k + 1/2) r for pos = (m + 1) / w, capped at
 * +-cap (NaN passes through, as torch.clamp lets it):
 *     mean = (w/2) (sum_k erf(z_k) + edges below the window - edges above it)
 *     d_dm = r / sqrt(pi) sum_k exp(-z_k^2)
 *     d_ds = -sqrt(2) r / sqrt(pi) sum_k z_k exp(-z_k^2)
 * Float32 throughout; the approximations below are accurate to a few units of float32 rounding. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* exp(y) for y in [-87, 0] (the loop's arguments are above -61): y = k ln 2 + r with |r| <= ln2 / 2,
 * exp(r) by its degree-7 Taylor polynomial (relative error below 6e-9) and 2^k from the exponent
 * bits; no library call, so the loop vectorises without -ffast-math. */
static inline float exp_nonpositive(float y) {
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to the nearest integer */
    float k = (y * 1.44269504088896341f + shifter) - shifter;
    float r = (y - k * 0.693145751953125f) - k * 1.42860682030941723e-6f; /* ln 2 in two parts */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666666666666667e-1f + r * (4.16666666666666667e-2f
              + r * (8.33333333333333333e-3f + r * (1.38888888888888889e-3f + r * 1.98412698412698413e-4f))))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erf(x) for x >= 0 given e = exp(-x^2): below 1, x P(x^2) (P fitted to erf(x)/x on [0, 1], relative
 * error 1.4e-9); from 1 on, 1 - e Q(u), u = (x - 2.45) / 1.45 (Q fitted to exp(x^2) erfc(x) on
 * [1, 3.9], relative error 1.7e-7, which the factor e shrinks below 7e-8; beyond 3.9, where erf
 * rounds to 1 in float32, e Q stays below 3.5e-8 up to the cap).  Polynomials only, no division:
 * both are evaluated and one is picked, which keeps the loop branch-free.  In float32 the result is
 * within 1.4e-7 of erf; the tests check the sums against exact ones. */
static inline float erf_nonnegative(float x, float e) {
    const float u = x * x;
    const float small = x * (1.1283791659e+00f + u * (-3.7612626908e-01f + u * (1.1283597492e-01f
                        + u * (-2.6854329538e-02f + u * (5.1893128124e-03f + u * (-8.0188590129e-04f
                        + u * 7.8825004410e-05f))))));
    const float v = (x - 2.45f) * 0.689655172413793103f;
    const float scaled_erfc = 2.1458708726e-01f + v * (-1.1150880023e-01f + v * (5.5035763044e-02f
                              + v * (-2.5949680260e-02f + v * (1.1748338248e-02f + v * (-5.1606342904e-03f
                              + v * (2.1805434895e-03f + v * (-8.1382526062e-04f + v * (3.1990776175e-04f
                              + v * (-2.0172817475e-04f + v * 7.7233785333e-05f)))))))));
    return x < 1.0f ? small : 1.0f - e * scaled_erfc;
}

/* Elements per block: the block's per-element numbers stay in the L1 cache while the loop over the
 * window's edges runs across them, and the innermost loop (over elements) is one the compiler
 * vectorises with any flags. */
#define BLOCK 256

/* One build runs on any x86-64 CPU and uses the widest vectors the CPU has: the x86-64-v4 level
 * (AVX-512), v3 (AVX2 with FMA) or the baseline.  Compilers older than gcc 12 know no levels in
 * target_clones; there the AVX2 version goes without FMA. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && __GNUC__ >= 12 && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void window(const float *restrict m, const float *restrict s, Py_ssize_t n, int bins, int width, float cap,
                   float *restrict mean, float *restrict d_dm, float *restrict d_ds) {
    const int n_edges = bins - 1;
    const float w = 2.0f / (float)n_edges, inv_sqrt_pi = 0.564189583547756287f, sqrt2 = 1.41421356237309505f;
    const float last = (float)(n_edges - width + 1);
    float r[BLOCK], from[BLOCK], below[BLOCK], sum_erf[BLOCK], sum_dens[BLOCK], sum_z_dens[BLOCK];
    for (Py_ssize_t start = 0; start < n; start += BLOCK) {
        const int len = n - start < BLOCK ? (int)(n - start) : BLOCK;
        for (int i = 0; i < len; i++) {
            r[i] = w * 0.707106781186547524f / s[start + i]; /* one bin width in units of s sqrt 2 */
            const float pos = (m[start + i] + 1.0f) / w;     /* edge j sits at pos = j - 1/2 */
            /* The window's first edge: width/2 edges each side of m, moved inside [1, n_edges] (see
             * _window); 1 when the window holds every edge. */
            float v = pos + 1.5f - 0.5f * (float)width;
            v = v > 0.0f ? v : 0.0f; /* (NaN -> 0: the int conversion below needs a number) */
            v = v < (float)n_edges ? v : (float)n_edges;
            const float f = (float)(int32_t)v; /* floor, as v >= 0 */
            const float first = f < 1.0f ? 1.0f : (f > last ? last : f);
            from[i] = pos - first + 0.5f; /* z_k = (from - k) r */
            below[i] = 2.0f * first - 2.0f - (float)n_edges + (float)width; /* edges below less edges above */
            sum_erf[i] = sum_dens[i] = sum_z_dens[i] = 0.0f;
        }
        for (int k = 0; k < width; k++) {
            for (int i = 0; i < len; i++) {
                float z = (from[i] - (float)k) * r[i];
                z = z < -cap ? -cap : (z > cap ? cap : z);
                const float x = z < 0.0f ? -z : z;
                const float dens = exp_nonpositive(-x * x);
                const float e = erf_nonnegative(x, dens);
                sum_erf[i] += z < 0.0f ? -e : e;
                sum_dens[i] += dens;
                sum_z_dens[i] += z * dens;
            }
        }
        for (int i = 0; i < len; i++) {
            mean[start + i] = 0.5f * w * (sum_erf[i] + below[i]);
            d_dm[start + i] = sum_dens[i] * r[i] * inv_sqrt_pi;
            d_ds[start + i] = -sum_z_dens[i] * r[i] * inv_sqrt_pi * sqrt2;
        }
    }
}

static PyObject *py_window(PyObject *self, PyObject *args) {
    unsigned long long m, s, out;
    Py_ssize_t n;
    int bins, width;
    float cap;
    if (!PyArg_ParseTuple(args, "KKniifK", &m, &s, &n, &bins, &width, &cap, &out))
        return NULL;
    if (bins < 2 || width < 1 || width > bins - 1 || n < 0) {
        PyErr_Format(PyExc_ValueError, "window: need bins >= 2, 1 <= width <= bins - 1 and n >= 0, got %d, %d, %zd",
                     bins, width, n);
        return NULL;
    }
    float *o = (float *)(uintptr_t)out;
    Py_BEGIN_ALLOW_THREADS
    window((const float *)(uintptr_t)m, (const float *)(uintptr_t)s, n, bins, width, cap, o, o + n, o + 2 * n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"window", py_window, METH_VARARGS,
     "window(m_ptr, s_ptr, n, bins, width, cap, out_ptr): mean, d/dm, d/ds of n contiguous float32 elements "
     "into the contiguous float32 (3, n) buffer at out_ptr."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_discretised_window", NULL, -1, methods};

/* Floats per vector of the clone the CPU runs: with fewer than 8 the loop is not faster than PyTorch's
 * own vectorised ops, and the engine does not use it. */
static long vector_floats(void) {
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 16;
    if (__builtin_cpu_supports("avx2"))
        return 8;
#endif
    return 4;
}

/* Raised with every change to this file, as is _WINDOW_VERSION in discretised.py: an editable install
 * keeps its old build after a pull until it is reinstalled, and the engine must not use that build. */
#define VERSION 1

PyMODINIT_FUNC PyInit__discretised_window(void) {
    PyObject *mod = PyModule_Create(&module);
    if (mod != NULL && (PyModule_AddIntConstant(mod, "vector_floats", vector_floats()) < 0
                        || PyModule_AddIntConstant(mod, "version", VERSION) < 0)) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
