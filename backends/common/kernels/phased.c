/* Phased LSTM's inference loop over the open units only: one call per layer runs every step.
 *
 * The time gate k reads only the timestamps and tau, s, r_on (and the leak): each step computes it first,
 * as the torch backend's time_gate does, operation for operation. A unit whose k is exactly 0 at a step (closed, with leak 0 as at inference) keeps its state:
 * c_t = 0 c~_t + (1 - 0) c_{t-1} = c_{t-1} whenever c~_t is finite. Only the open (b, j) pairs need their
 * four gate pre-activations, each a dot product with a row of W_ih and of W_hh, so a step costs about the
 * open fraction of the dense step's matmuls. The arithmetic of an open pair is the spec's, in the
 * reference's order:
 *
 *   [i, f, g, o] = (W_ih x_t + b_ih) + (W_hh h_{t-1} + b_hh)
 *   i = sigmoid(i + p_i c_{t-1}), f = sigmoid(f + p_f c_{t-1})     (peepholes; none: p = 0, no add)
 *   c~ = f c_{t-1} + i tanh(g),   h~ = sigmoid(o + p_o c~) tanh(c~)
 *   c_t = k c~ + (1 - k) c_{t-1}, h_t = k h~ + (1 - k) h_{t-1}
 *
 * Where a closed unit's c~ need not be finite, the pair is computed as if open, so that NaN goes where the
 * spec puts it (0 * NaN is NaN): every unit of a row whose x_t or h_{t-1} holds a NaN or an infinity (the
 * matmuls spread it to every unit) or whose c_{t-1} does (an infinite c_{t-1} makes c~ infinite, and the
 * closed mix 0 * inf + inf is NaN), and every step of a unit whose weights, biases or peepholes do
 * (unit_always[j] != 0, found by the caller). A gate k that is NaN is not 0, so it is computed too.
 *
 * Layout: contiguous and batch-major: x (B, T, I), ts (B, T), out (B, T, H); w_ih (4H, I), w_hh (4H, H) and
 * the biases (4H) in torch's gate order i, f, g, o; peep (3H: p_i, p_f, p_o) or NULL; tau, s, r_on (H); h and
 * c (B, H) hold the initial state and receive the final one. len[b] (NULL: T) is row b's number of valid
 * steps: past it the state is frozen, the output is 0 and the inputs are not read. Scratch: pre (B, 4H),
 * h_prev and k (B, H), open (B, H) bytes, units (H) and rows (B) int64. phased_lstm_open_count counts the
 * open entries of the valid steps first, for the caller's choice of loop.
 *
 * Order: time outside; at each step the units outside, and the rows a unit is open in inside, so that a
 * unit's weight rows are read once a step however many rows it is open in (with timestamps shared by the
 * rows, as in regular sampling, the open units are the same in every row).
 */
#ifndef PHASED_BODY

#include <stdint.h>
#include <string.h>

#include "rnnspec_math.h"

#define PHASED_BODY
#define REAL float
#define SUFFIX _f32
#define SIGMOID rs_sigmoidf
#define TANH rs_tanhf
#define FLOOR floorf
#include "phased.c"
#undef REAL
#undef SUFFIX
#undef SIGMOID
#undef TANH
#undef FLOOR
#define REAL double
#define SUFFIX _f64
#define SIGMOID rs_sigmoid
#define TANH rs_tanh
#define FLOOR floor
#include "phased.c"

#else /* PHASED_BODY: the kernel over REAL */

#define FN(name) RS_CAT(name, SUFFIX)

/* Dot products are sums over PH_LANES running sums, added up at the end: vectorised without reassociation
 * (no -ffast-math), in an order that does not depend on the instruction set. */
#define PH_LANES 16

/* Whether every entry of x[0:n] is finite: x - x is 0 for a finite x, NaN for NaN and infinities. */
static inline int FN(ph_finite)(int64_t n, const REAL *restrict x) {
    REAL acc[PH_LANES] = {0};
    int64_t j = 0;
    for (; j + PH_LANES <= n; j += PH_LANES)
        for (int l = 0; l < PH_LANES; ++l) acc[l] += x[j + l] - x[j + l];
    REAL s = 0;
    for (int l = 0; l < PH_LANES; ++l) s += acc[l];
    for (; j < n; ++j) s += x[j] - x[j];
    return s == 0;
}

/* Four dot products sharing x: sum_j x_j y_{r, j} for r < 4 (ys[r] NULL: not needed, ys[0] read in its
 * place), each over its own PH_LANES running sums, so that a value is the same whichever group its row is in. */
static inline void FN(ph_dot4)(int64_t n, const REAL *restrict x, const REAL *const ys[4], REAL out[4]) {
    REAL a0[PH_LANES] = {0}, a1[PH_LANES] = {0}, a2[PH_LANES] = {0}, a3[PH_LANES] = {0};
    const REAL *y0 = ys[0], *y1 = ys[1] ? ys[1] : ys[0], *y2 = ys[2] ? ys[2] : ys[0], *y3 = ys[3] ? ys[3] : ys[0];
    int64_t j = 0;
    for (; j + PH_LANES <= n; j += PH_LANES)
        for (int l = 0; l < PH_LANES; ++l) {
            const REAL w = x[j + l];
            a0[l] += w * y0[j + l];
            a1[l] += w * y1[j + l];
            a2[l] += w * y2[j + l];
            a3[l] += w * y3[j + l];
        }
    REAL s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int l = 0; l < PH_LANES; ++l) {
        s0 += a0[l];
        s1 += a1[l];
        s2 += a2[l];
        s3 += a3[l];
    }
    for (; j < n; ++j) {
        s0 += x[j] * y0[j];
        s1 += x[j] * y1[j];
        s2 += x[j] * y2[j];
        s3 += x[j] * y3[j];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* The time gate k of one row at one step for every unit, the torch backend's time_gate operation for
 * operation (no contraction, IEEE division and floor: the same bits). Out of line, compiled without
 * trapping math: gcc then vectorises floor (a rounding instruction, exact, whose only difference is the
 * inexact flag no caller reads). */
__attribute__((noinline, optimize("no-trapping-math"))) static void FN(ph_gate_row)(int64_t H, REAL t, const REAL *restrict tau, const REAL *restrict s,
                                   const REAL *restrict r_on, REAL leak, REAL *restrict k) {
    for (int64_t j = 0; j < H; ++j) {
        const REAL shifted = t - s[j];
        const REAL phase = (shifted - tau[j] * FLOOR(shifted / tau[j])) / tau[j];
        const REAL rising = (REAL)2 * phase / r_on[j];
        k[j] = phase < r_on[j] / (REAL)2 ? rising : (phase < r_on[j] ? (REAL)2 - rising : leak * phase);
    }
}

static inline int64_t FN(ph_steps)(const int64_t *len, int64_t b, int64_t T) {
    if (!len) return T;
    const int64_t n = len[b];
    return n < 0 ? 0 : (n > T ? T : n);
}

/* The number of open entries (k != 0) over the valid steps of every row, counted until it passes limit
 * (then *count is some number above limit); scratch k (H). */
void FN(phased_lstm_open_count)(int64_t B, int64_t T, int64_t H, const REAL *ts, const REAL *tau, const REAL *s,
                                const REAL *r_on, double leak, const int64_t *len, int64_t limit, REAL *k,
                                int64_t *count) {
    int64_t n = 0;
    for (int64_t b = 0; b < B && n <= limit; ++b) {
        const int64_t steps = FN(ph_steps)(len, b, T);
        for (int64_t t = 0; t < steps && n <= limit; ++t) {
            FN(ph_gate_row)(H, ts[b * T + t], tau, s, r_on, (REAL)leak, k);
            for (int64_t j = 0; j < H; ++j) n += k[j] != 0;
        }
    }
    *count = n;
}

void FN(phased_lstm_open_units)(int64_t B, int64_t T, int64_t I, int64_t H, const REAL *x, const REAL *w_ih,
                                const REAL *b_ih, const REAL *w_hh, const REAL *b_hh, const REAL *peep,
                                const REAL *ts, const REAL *tau, const REAL *s, const REAL *r_on, double leak,
                                const int64_t *len, const uint8_t *unit_always, REAL *h, REAL *c, REAL *out,
                                REAL *pre, REAL *h_prev, REAL *k, uint8_t *open, int64_t *units, int64_t *rows) {
    const int64_t G = 4 * H;
    for (int64_t t = 0; t < T; ++t) {
        /* Each running row's gate, and which of its units compute: the open ones, every unit of a row whose
         * x_t, h_{t-1} or c_{t-1} is not finite, and the units whose parameters are not. */
        int64_t n_rows = 0;
        for (int64_t b = 0; b < B; ++b) {
            if (t >= FN(ph_steps)(len, b, T)) {
                memset(out + (b * T + t) * H, 0, (size_t)H * sizeof(REAL));
                continue;
            }
            rows[n_rows++] = b;
            const uint8_t full = !(FN(ph_finite)(I, x + (b * T + t) * I) && FN(ph_finite)(H, h + b * H) &&
                                   FN(ph_finite)(H, c + b * H));
            REAL *kb = k + b * H;
            uint8_t *ob = open + b * H;
            FN(ph_gate_row)(H, ts[b * T + t], tau, s, r_on, (REAL)leak, kb);
            for (int64_t j = 0; j < H; ++j) ob[j] = (uint8_t)((kb[j] != 0) | full | unit_always[j]);
            memcpy(h_prev + b * H, h + b * H, (size_t)H * sizeof(REAL));
        }
        /* The units open in at least one row. */
        int64_t n_units = 0;
        for (int64_t j = 0; j < H; ++j) {
            uint8_t any = 0;
            for (int64_t n = 0; n < n_rows; ++n) any |= open[rows[n] * H + j];
            if (any) units[n_units++] = j;
        }
        /* The open pairs' pre-activations: a unit's gate row against its open rows, four rows at a time. */
        for (int64_t u = 0; u < n_units; ++u) {
            const int64_t j = units[u];
            for (int64_t g = 0; g < 4; ++g) {
                const int64_t r = g * H + j;
                const REAL *wi = w_ih + r * I, *wh = w_hh + r * H;
                int64_t group[4];
                int m = 0;
                for (int64_t n = 0; n <= n_rows; ++n) {
                    if (n < n_rows && open[rows[n] * H + j]) group[m++] = rows[n];
                    if (m == 4 || (n == n_rows && m > 0)) {
                        const REAL *xs[4] = {NULL, NULL, NULL, NULL}, *hs[4] = {NULL, NULL, NULL, NULL};
                        for (int q = 0; q < m; ++q) {
                            xs[q] = x + (group[q] * T + t) * I;
                            hs[q] = h_prev + group[q] * H;
                        }
                        REAL gi[4], gh[4];
                        FN(ph_dot4)(I, wi, xs, gi);
                        FN(ph_dot4)(H, wh, hs, gh);
                        for (int q = 0; q < m; ++q) pre[group[q] * G + r] = (gi[q] + b_ih[r]) + (gh[q] + b_hh[r]);
                        m = 0;
                    }
                }
            }
        }
        /* The cell and the gate's mix where computed; the other units keep their state. */
        for (int64_t n = 0; n < n_rows; ++n) {
            const int64_t b = rows[n];
            const REAL *kb = k + b * H, *p = pre + b * G;
            const uint8_t *ob = open + b * H;
            REAL *hb = h + b * H, *cb = c + b * H;
            for (int64_t u = 0; u < n_units; ++u) {
                const int64_t j = units[u];
                if (!ob[j]) continue;
                const REAL kj = kb[j], cp = cb[j], hp = h_prev[b * H + j];
                REAL ai = p[j], af = p[H + j], ag = p[2 * H + j], ao = p[3 * H + j];
                if (peep) {
                    ai = ai + peep[j] * cp;
                    af = af + peep[H + j] * cp;
                }
                const REAL cc = SIGMOID(af) * cp + SIGMOID(ai) * TANH(ag);
                if (peep) ao = ao + peep[2 * H + j] * cc;
                const REAL hc = SIGMOID(ao) * TANH(cc);
                cb[j] = kj * cc + ((REAL)1 - kj) * cp;
                hb[j] = kj * hc + ((REAL)1 - kj) * hp;
            }
            memcpy(out + (b * T + t) * H, hb, (size_t)H * sizeof(REAL));
        }
    }
}

#undef FN
#endif /* PHASED_BODY */
