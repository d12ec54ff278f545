/* The elementwise recurrences over whole (batch, time, H) buffers, forward and backward, one call each:
 *
 *   linear_recurrence   h_t = a_t h_{t-1} + b_t
 *   IndRNN's            h_t = act((pre_t + bias) + u h_{t-1}), act relu or tanh, u per unit or per row
 *                       (indrnn's layer leaves its projection's bias to the kernel; zeros for the primitive)
 *   QRNN's gates and pooling, fused: from the projection's gate blocks z, f, [i], [o] of each step and
 *                       their bias, z = tanh, f, i, o = sigmoid, f = f + (1 - f) m under the
 *                       zoneout mask m in [0, 1] (exactly 1 where m = 1),
 *                       c_t = f c_{t-1} + (1 - f) z (modes f, fo) or f c_{t-1} + i z (mode ifo),
 *                       h_t = o c_t (fo, ifo) or c_t (f)
 *
 * Layout: every buffer is contiguous and batch-major, entry (b, t, j) at (b T + t) W + j with W = H (G H
 * for QRNN's projection and its cotangent), except the output cotangent dh, read through its row strides
 * (sb, st) (autograd hands strided and broadcast cotangents, e.g. a sum's) with contiguous columns, or
 * for the linear and IndRNN kernels a column stride sh of 0 (broadcast) too.
 *
 * Order: the rows' recurrences are independent. Rows are taken in blocks (one row when H >= 64, else
 * enough rows for 64 columns, so that short rows still give independent work between dependent steps),
 * time runs outside, and the innermost loop runs over a row's H contiguous columns, which the compiler
 * vectorises. A row's steps are consecutive in memory, so each pass streams through its buffers.
 *
 * Lengths: len[b] (len NULL: every row has T steps) is row b's number of valid steps, a prefix. Past it
 * the state is frozen (the final state is the one after step len - 1, or the initial one), outputs and
 * every input cotangent are 0, and the inputs are never read (padding may hold anything, NaN included).
 *
 * Backward: g_t, the cotangent of the state after step t, is dh_t plus what step t + 1 sends back, the
 * carry (for t = len - 1: the final state's cotangent dfinal, NULL for zero). The carry of each row is
 * kept in the initial state's cotangent buffer: after step 0 it is that cotangent. Sums over steps (u's
 * and the biases' cotangents) are accumulated in double, in scratch the caller passes. The arithmetic is
 * the reference's, operation by operation (rnnspec.reference: independent.py, qrnn.py), so that NaN and
 * infinities go where the spec puts them.
 */
#include <stdint.h>
#include <string.h>

#include "rnnspec_math.h"

/* Row b's valid steps. */
static inline int64_t rs_steps(const int64_t *len, int64_t b, int64_t T) {
    if (!len) return T;
    int64_t n = len[b];
    return n < 0 ? 0 : (n > T ? T : n);
}

/* Rows per block: enough for 64 columns. */
static inline int64_t rs_block(int64_t B, int64_t H) {
    int64_t r = H >= 64 ? 1 : (64 + H - 1) / (H > 0 ? H : 1);
    return r < B ? r : (B > 0 ? B : 1);
}

#define RS_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Specialisation. A kernel's work on one column is an always-inlined function (..._col), looped over by
 * an always-inlined body (..._body) that takes the kernel's flags as arguments: the activation, the
 * pooling mode, whether a zoneout mask is given, whether dh's columns are contiguous (sh = 1) or
 * broadcast or absent (sh = 0), whether IndRNN's forward runs in place. Each combination of flags is a
 * function of its own, a variant: the body called with constant flags and every call inlined (flatten),
 * so that its column loops compile to branch-free vectorised code. The exported kernel picks the variant
 * once per call. One function per variant rather than one per kernel holding them all: gcc's time on a
 * function grows faster than its size (gcc 12 -O3, the float32 kernels: 8.8 s as one function per kernel,
 * 2.7 s as one per variant), and its inlining budget then left rs_tanhf out of line, a call that keeps a
 * loop from being vectorised. */
#define RS_VARIANT static __attribute__((noinline, flatten))

/* The columns of a row run as whole cache lines of LINE entries (64 bytes), each a loop of a fixed count
 * that is vectorised without an epilogue, and a scalar loop over the last H % LINE columns (an empty asm
 * statement keeps it from being vectorised: a vectorised copy of a short loop of transcendental
 * functions, in each variant, would more than double the compile time for nothing). */
#define RS_LINE(REAL) (64 / (int64_t)sizeof(REAL))
#define RS_REMAINDER(REAL, H, STEP)                                                                         \
    for (int64_t j = (H) - (H) % RS_LINE(REAL); j < (H); ++j) {                                             \
        __asm__ volatile("");                                                                               \
        STEP;                                                                                               \
    }

/* STEP (an expression of the column j) over a row's H columns, first to last. */
#define RS_COLUMNS_UP(REAL, H, STEP)                                                                        \
    do {                                                                                                    \
        for (int64_t lo_ = 0; lo_ + RS_LINE(REAL) <= (H); lo_ += RS_LINE(REAL))                             \
            for (int64_t j = lo_; j < lo_ + RS_LINE(REAL); ++j) STEP;                                       \
        RS_REMAINDER(REAL, H, STEP)                                                                         \
    } while (0)

/* STEP over a row's H columns for the backward scans, which walk time from the last step to the first:
 * from the last column to the first, a cache line at a time (ascending within one). The addresses then
 * descend steadily, which the hardware prefetcher follows; rows read ascending while the steps descend
 * defeat it (2.5x slower measured at B=50, T=1000, H=128 on x86-64), and a loop descending column by
 * column needs a lane shuffle per load and store. */
#define RS_COLUMNS_DOWN(REAL, H, STEP)                                                                      \
    do {                                                                                                    \
        RS_REMAINDER(REAL, H, STEP)                                                                         \
        for (int64_t lo_ = (H) - (H) % RS_LINE(REAL) - RS_LINE(REAL); lo_ >= 0; lo_ -= RS_LINE(REAL))       \
            for (int64_t j = lo_; j < lo_ + RS_LINE(REAL); ++j) STEP;                                       \
    } while (0)

/* The body (the loop over time within a block, variadic: it holds commas) for each block of rows b0 to
 * b1 - 1. */
#define RS_BLOCKS(B, H, b0, b1, ...)                                                                        \
    do {                                                                                                    \
        const int64_t rows_ = rs_block(B, H);                                                               \
        for (int64_t b0 = 0; b0 < (B); b0 += rows_) {                                                       \
            const int64_t b1 = b0 + rows_ < (B) ? b0 + rows_ : (B);                                         \
            __VA_ARGS__                                                                                     \
        }                                                                                                   \
    } while (0)

/* Each row's final state: its state after its last valid step, or its initial state. */
#define RS_FINALS(REAL, len, T, H, b0, b1, states, initial, final)                                          \
    for (int64_t r_ = (b0); r_ < (b1); ++r_) {                                                              \
        const int64_t n_ = rs_steps(len, r_, T);                                                            \
        memcpy((final) + r_ * (H), n_ ? (states) + (r_ * (T) + n_ - 1) * (H) : (initial) + r_ * (H),        \
               (size_t)(H) * sizeof(REAL));                                                                 \
    }

/* The parameters of the variants (the exported kernels' without their flags) and their names. */
#define RS_LB_PARAMS(REAL)                                                                                  \
    const REAL *restrict a, const REAL *restrict h0, const REAL *restrict h, const int64_t *restrict len,   \
        const REAL *restrict dh, int64_t sb, int64_t st, const REAL *restrict dfinal, REAL *restrict da,    \
        REAL *restrict db, REAL *restrict dh0, int64_t B, int64_t T, int64_t H
#define RS_LB_ARGS a, h0, h, len, dh, sb, st, dfinal, da, db, dh0, B, T, H
#define RS_IF_PARAMS(REAL)                                                                                  \
    const REAL *restrict pre, const REAL *restrict bias, const REAL *restrict u, int64_t u_rows,            \
        const REAL *restrict h0, const int64_t *restrict len, REAL *restrict h, REAL *restrict final,       \
        int64_t B, int64_t T, int64_t H
#define RS_IF_ARGS pre, bias, u, u_rows, h0, len, h, final, B, T, H
#define RS_IB_PARAMS(REAL)                                                                                  \
    const REAL *restrict u, int64_t u_rows, const REAL *restrict h0, const REAL *restrict h,                \
        const int64_t *restrict len, const REAL *restrict dh, int64_t sb, int64_t st,                       \
        const REAL *restrict dfinal, REAL *restrict dpre, REAL *restrict du, REAL *restrict dbias,          \
        REAL *restrict dh0, double *restrict acc, int64_t B, int64_t T, int64_t H
#define RS_IB_ARGS u, u_rows, h0, h, len, dh, sb, st, dfinal, dpre, du, dbias, dh0, acc, B, T, H
#define RS_QF_PARAMS(REAL)                                                                                  \
    const REAL *restrict pre, const REAL *restrict bias, const REAL *restrict mask,                         \
        const REAL *restrict c0, const int64_t *restrict len, REAL *restrict h, REAL *restrict c,           \
        REAL *restrict final, int64_t B, int64_t T, int64_t H
#define RS_QF_ARGS pre, bias, mask, c0, len, h, c, final, B, T, H
#define RS_QB_PARAMS(REAL)                                                                                  \
    const REAL *restrict pre, const REAL *restrict bias, const REAL *restrict mask,                         \
        const REAL *restrict c0, const REAL *restrict c, const int64_t *restrict len,                       \
        const REAL *restrict dh, int64_t sb, int64_t st, const REAL *restrict dfinal, REAL *restrict dpre,  \
        REAL *restrict dbias, REAL *restrict dc0, double *restrict acc, int64_t B, int64_t T, int64_t H
#define RS_QB_ARGS pre, bias, mask, c0, c, len, dh, sb, st, dfinal, dpre, dbias, dc0, acc, B, T, H

/* The carries start as the final state's cotangent (NULL: zero). */
#define RS_START_CARRIES(REAL, carry, dfinal, B, H)                                                         \
    do {                                                                                                    \
        if (dfinal) memcpy(carry, dfinal, (size_t)((B) * (H)) * sizeof(REAL));                              \
        else memset(carry, 0, (size_t)((B) * (H)) * sizeof(REAL));                                          \
    } while (0)

#define RS_RECURRENCES(REAL, SUFFIX, EXP, SIGMOID, TANH)                                                            \
    /* What an absent dh reads (sh = 0, zero strides). */                                                           \
    static const REAL RS_CAT(rs_zero, SUFFIX) = 0;                                                                  \
                                                                                                                    \
    /* ---- linear_recurrence ------------------------------------------------------------------------ */           \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_linear_col, SUFFIX)(int64_t j, const REAL *restrict x,                          \
                                                       const REAL *restrict prev, const REAL *restrict c,           \
                                                       REAL *restrict y) {                                          \
        y[j] = x[j] * prev[j] + c[j];                                                                               \
    }                                                                                                               \
                                                                                                                    \
    /* h = a h_{t-1} + b over every row; h past a row's length is 0, final each row's last state. */                \
    __attribute__((flatten)) void RS_CAT(rs_linear_forward, SUFFIX)(                                                \
        const REAL *restrict a, const REAL *restrict b, const REAL *restrict h0, const int64_t *restrict len,       \
        REAL *restrict h, REAL *restrict final, int64_t B, int64_t T, int64_t H) {                                  \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = 0; t < T; ++t) {                                                                       \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(h + o, 0, (size_t)H * sizeof(REAL));                                                 \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *prev = t ? h + o - H : h0 + r * H;                                                  \
                    RS_COLUMNS_UP(REAL, H, RS_CAT(rs_linear_col, SUFFIX)(j, a + o, prev, b + o, h + o));            \
                }                                                                                                   \
            }                                                                                                       \
            RS_FINALS(REAL, len, T, H, b0, b1, h, h0, final)                                                        \
        });                                                                                                         \
    }                                                                                                               \
                                                                                                                    \
    /* Column j of a valid step of the backward: g = carry + dh, da = g h_{t-1}, db = g, carry = g a. */            \
    RS_ALWAYS_INLINE void RS_CAT(rs_linear_back_col, SUFFIX)(int64_t j, const REAL *restrict x,                     \
                                                            const REAL *restrict prev, const REAL *restrict d,      \
                                                            int64_t sh, REAL *restrict carry, REAL *restrict ga,    \
                                                            REAL *restrict gb) {                                    \
        REAL g = carry[j] + d[j * sh];                                                                              \
        gb[j] = g;                                                                                                  \
        ga[j] = g * prev[j];                                                                                        \
        carry[j] = g * x[j];                                                                                        \
    }                                                                                                               \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_linear_backward_body, SUFFIX)(RS_LB_PARAMS(REAL), int64_t sh) {                 \
        RS_START_CARRIES(REAL, dh0, dfinal, B, H);                                                                  \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = T - 1; t >= 0; --t) {                                                                  \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(da + o, 0, (size_t)H * sizeof(REAL));                                                \
                        memset(db + o, 0, (size_t)H * sizeof(REAL));                                                \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *prev = t ? h + o - H : h0 + r * H;                                                  \
                    const REAL *d = dh + r * sb + t * st;                                                           \
                    REAL *carry = dh0 + r * H;                                                                      \
                    const REAL *x = a + o;                                                                          \
                    REAL *ga = da + o, *gb = db + o;                                                                \
                    RS_COLUMNS_DOWN(REAL, H, RS_CAT(rs_linear_back_col, SUFFIX)(j, x, prev, d, sh, carry, ga, gb)); \
                }                                                                                                   \
            }                                                                                                       \
        });                                                                                                         \
    }                                                                                                               \
                                                                                                                    \
    RS_VARIANT void RS_CAT(rs_linear_backward_s0, SUFFIX)(RS_LB_PARAMS(REAL)) {                                     \
        RS_CAT(rs_linear_backward_body, SUFFIX)(RS_LB_ARGS, 0);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_linear_backward_s1, SUFFIX)(RS_LB_PARAMS(REAL)) {                                     \
        RS_CAT(rs_linear_backward_body, SUFFIX)(RS_LB_ARGS, 1);                                                     \
    }                                                                                                               \
                                                                                                                    \
    /* The cotangents da, db (0 past each length) and dh0 of linear_recurrence from dh (NULL: zero; its             \
     * column stride sh 1 or 0) and dfinal (NULL: zero); h is the forward's output. */                              \
    void RS_CAT(rs_linear_backward, SUFFIX)(const REAL *a, const REAL *h0, const REAL *h, const int64_t *len,       \
                                           const REAL *dh, int64_t sb, int64_t st, int64_t sh,                      \
                                           const REAL *dfinal, REAL *da, REAL *db, REAL *dh0, int64_t B,            \
                                           int64_t T, int64_t H) {                                                  \
        if (!dh) {                                                                                                  \
            dh = &RS_CAT(rs_zero, SUFFIX);                                                                          \
            sb = st = sh = 0;                                                                                       \
        }                                                                                                           \
        if (sh) RS_CAT(rs_linear_backward_s1, SUFFIX)(RS_LB_ARGS);                                                  \
        else RS_CAT(rs_linear_backward_s0, SUFFIX)(RS_LB_ARGS);                                                     \
    }                                                                                                               \
                                                                                                                    \
    /* ---- IndRNN's recurrence ---------------------------------------------------------------------- */           \
                                                                                                                    \
    /* Column j of a valid step: y = act((x + bias) + u h_{t-1}), the reference's order (the projection             \
     * with its bias, then the recurrent term); relu keeps NaN (a NaN compares false). In place (x NULL),           \
     * y holds x on entry. */                                                                                       \
    RS_ALWAYS_INLINE void RS_CAT(rs_indrnn_col, SUFFIX)(int64_t j, const REAL *restrict x,                          \
                                                       const REAL *restrict bias, const REAL *restrict u,           \
                                                       const REAL *restrict prev, REAL *restrict y, int tanh_,      \
                                                       int inplace) {                                               \
        REAL v = ((inplace ? y[j] : x[j]) + bias[j]) + u[j] * prev[j];                                              \
        y[j] = tanh_ ? TANH(v) : (v < 0 ? (REAL)0 : v);                                                             \
    }                                                                                                               \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_indrnn_forward_body, SUFFIX)(RS_IF_PARAMS(REAL), int tanh_, int inplace) {      \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = 0; t < T; ++t) {                                                                       \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(h + o, 0, (size_t)H * sizeof(REAL));                                                 \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *prev = t ? h + o - H : h0 + r * H;                                                  \
                    const REAL *ur = u_rows ? u + r * H : u;                                                        \
                    const REAL *x = inplace ? 0 : pre + o;                                                          \
                    RS_COLUMNS_UP(REAL, H,                                                                          \
                                  RS_CAT(rs_indrnn_col, SUFFIX)(j, x, bias, ur, prev, h + o, tanh_, inplace));      \
                }                                                                                                   \
            }                                                                                                       \
            RS_FINALS(REAL, len, T, H, b0, b1, h, h0, final)                                                        \
        });                                                                                                         \
    }                                                                                                               \
                                                                                                                    \
    RS_VARIANT void RS_CAT(rs_indrnn_forward_relu, SUFFIX)(RS_IF_PARAMS(REAL)) {                                    \
        RS_CAT(rs_indrnn_forward_body, SUFFIX)(RS_IF_ARGS, 0, 0);                                                   \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_forward_tanh, SUFFIX)(RS_IF_PARAMS(REAL)) {                                    \
        RS_CAT(rs_indrnn_forward_body, SUFFIX)(RS_IF_ARGS, 1, 0);                                                   \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_forward_relu_inplace, SUFFIX)(RS_IF_PARAMS(REAL)) {                            \
        RS_CAT(rs_indrnn_forward_body, SUFFIX)(RS_IF_ARGS, 0, 1);                                                   \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_forward_tanh_inplace, SUFFIX)(RS_IF_PARAMS(REAL)) {                            \
        RS_CAT(rs_indrnn_forward_body, SUFFIX)(RS_IF_ARGS, 1, 1);                                                   \
    }                                                                                                               \
                                                                                                                    \
    /* h = act((pre + bias) + u h_{t-1}) over every row (act: 0 relu, 1 tanh; bias (H,), zeros for none;            \
     * u (H,), or (B, H) with u_rows 1); h past a row's length is 0, final each row's last state. pre               \
     * NULL: in place, h holds pre on entry (one buffer fewer: a new one costs its page faults). */                 \
    void RS_CAT(rs_indrnn_forward, SUFFIX)(const REAL *pre, const REAL *bias, const REAL *u, int64_t u_rows,        \
                                          const REAL *h0, const int64_t *len, int64_t act, REAL *h, REAL *final,    \
                                          int64_t B, int64_t T, int64_t H) {                                        \
        if (!pre && act) RS_CAT(rs_indrnn_forward_tanh_inplace, SUFFIX)(RS_IF_ARGS);                                \
        else if (!pre) RS_CAT(rs_indrnn_forward_relu_inplace, SUFFIX)(RS_IF_ARGS);                                  \
        else if (act) RS_CAT(rs_indrnn_forward_tanh, SUFFIX)(RS_IF_ARGS);                                           \
        else RS_CAT(rs_indrnn_forward_relu, SUFFIX)(RS_IF_ARGS);                                                    \
    }                                                                                                               \
                                                                                                                    \
    /* Column j of a valid step of the backward: g = (carry + dh) act'(z) with act' from the output y               \
     * (relu: y > 0; tanh: 1 - y^2), dpre = g, du += g h_{t-1}, dbias += g, carry = g u. */                         \
    RS_ALWAYS_INLINE void RS_CAT(rs_indrnn_back_col, SUFFIX)(int64_t j, const REAL *restrict y,                     \
                                                            const REAL *restrict u, const REAL *restrict prev,      \
                                                            const REAL *restrict d, int64_t sh, int tanh_,          \
                                                            REAL *restrict carry, REAL *restrict gp,                \
                                                            double *restrict acc, double *restrict bsum) {          \
        REAL slope = tanh_ ? (REAL)1 - y[j] * y[j] : (y[j] > 0 ? (REAL)1 : (REAL)0);                                \
        REAL g = (carry[j] + d[j * sh]) * slope;                                                                    \
        gp[j] = g;                                                                                                  \
        acc[j] += (double)(g * prev[j]);                                                                            \
        bsum[j] += (double)g;                                                                                       \
        carry[j] = g * u[j];                                                                                        \
    }                                                                                                               \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_indrnn_backward_body, SUFFIX)(RS_IB_PARAMS(REAL), int tanh_, int64_t sh) {      \
        RS_START_CARRIES(REAL, dh0, dfinal, B, H);                                                                  \
        double *bsum = acc + B * H;                                                                                 \
        memset(acc, 0, (size_t)((B + 1) * H) * sizeof(double));                                                     \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = T - 1; t >= 0; --t) {                                                                  \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(dpre + o, 0, (size_t)H * sizeof(REAL));                                              \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *prev = t ? h + o - H : h0 + r * H;                                                  \
                    const REAL *ur = u_rows ? u + r * H : u;                                                        \
                    const REAL *d = dh + r * sb + t * st;                                                           \
                    REAL *carry = dh0 + r * H;                                                                      \
                    double *sum = acc + r * H;                                                                      \
                    RS_COLUMNS_DOWN(REAL, H,                                                                        \
                                    RS_CAT(rs_indrnn_back_col, SUFFIX)(j, h + o, ur, prev, d, sh, tanh_, carry,     \
                                                                       dpre + o, sum, bsum));                       \
                }                                                                                                   \
            }                                                                                                       \
        });                                                                                                         \
        for (int64_t k = 0; k < B * H; ++k) du[k] = (REAL)acc[k];                                                   \
        for (int64_t j = 0; j < H; ++j) dbias[j] = (REAL)bsum[j];                                                   \
    }                                                                                                               \
                                                                                                                    \
    RS_VARIANT void RS_CAT(rs_indrnn_backward_relu_s0, SUFFIX)(RS_IB_PARAMS(REAL)) {                                \
        RS_CAT(rs_indrnn_backward_body, SUFFIX)(RS_IB_ARGS, 0, 0);                                                  \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_backward_relu_s1, SUFFIX)(RS_IB_PARAMS(REAL)) {                                \
        RS_CAT(rs_indrnn_backward_body, SUFFIX)(RS_IB_ARGS, 0, 1);                                                  \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_backward_tanh_s0, SUFFIX)(RS_IB_PARAMS(REAL)) {                                \
        RS_CAT(rs_indrnn_backward_body, SUFFIX)(RS_IB_ARGS, 1, 0);                                                  \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_indrnn_backward_tanh_s1, SUFFIX)(RS_IB_PARAMS(REAL)) {                                \
        RS_CAT(rs_indrnn_backward_body, SUFFIX)(RS_IB_ARGS, 1, 1);                                                  \
    }                                                                                                               \
                                                                                                                    \
    /* The cotangents dpre (0 past each length), du (B, H: each row's sum over its steps), dbias (H: the sum        \
     * of dpre over rows and steps) and dh0 of IndRNN's recurrence from dh (as for rs_linear_backward) and          \
     * dfinal (NULL: zero); h is the forward's output. The sums are accumulated in double in acc, (B + 1) H         \
     * doubles of scratch. */                                                                                       \
    void RS_CAT(rs_indrnn_backward, SUFFIX)(const REAL *u, int64_t u_rows, const REAL *h0, const REAL *h,           \
                                           const int64_t *len, int64_t act, const REAL *dh, int64_t sb,             \
                                           int64_t st, int64_t sh, const REAL *dfinal, REAL *dpre, REAL *du,        \
                                           REAL *dbias, REAL *dh0, double *acc, int64_t B, int64_t T,               \
                                           int64_t H) {                                                             \
        if (!dh) {                                                                                                  \
            dh = &RS_CAT(rs_zero, SUFFIX);                                                                          \
            sb = st = sh = 0;                                                                                       \
        }                                                                                                           \
        if (act && sh) RS_CAT(rs_indrnn_backward_tanh_s1, SUFFIX)(RS_IB_ARGS);                                      \
        else if (act) RS_CAT(rs_indrnn_backward_tanh_s0, SUFFIX)(RS_IB_ARGS);                                       \
        else if (sh) RS_CAT(rs_indrnn_backward_relu_s1, SUFFIX)(RS_IB_ARGS);                                        \
        else RS_CAT(rs_indrnn_backward_relu_s0, SUFFIX)(RS_IB_ARGS);                                                \
    }                                                                                                               \
                                                                                                                    \
    /* ---- QRNN: gate activations, pooling and output gate ----------------------------------------- */            \
                                                                                                                    \
    /* Column j of a valid step of the forward. p: the step's projection, gate blocks z, f, [i], [o] of H           \
     * (mode 0 f, 1 fo, 2 ifo), to which the bias (the same blocks) is added; m: the zoneout mask's row             \
     * (masked); c: c_t, written; y: h_t = o c_t, written (modes fo, ifo). */                                       \
    RS_ALWAYS_INLINE void RS_CAT(rs_qrnn_col, SUFFIX)(int64_t j, const REAL *restrict p,                            \
                                                     const REAL *restrict bias, const REAL *restrict m,             \
                                                     const REAL *restrict prev, REAL *restrict c,                   \
                                                     REAL *restrict y, int mode, int masked, int64_t H) {           \
        const int64_t io = 2 * H, oo = (mode == 2 ? 3 : 2) * H;                                                     \
        REAL z = TANH(p[j] + bias[j]);                                                                              \
        REAL f = SIGMOID(p[H + j] + bias[H + j]);                                                                   \
        if (masked) f = m[j] == 1 ? (REAL)1 : f + ((REAL)1 - f) * m[j];                                             \
        REAL drive = mode == 2 ? SIGMOID(p[io + j] + bias[io + j]) * z : ((REAL)1 - f) * z;                         \
        REAL v = f * prev[j] + drive;                                                                               \
        c[j] = v;                                                                                                   \
        if (mode) y[j] = SIGMOID(p[oo + j] + bias[oo + j]) * v;                                                     \
    }                                                                                                               \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_PARAMS(REAL), int mode, int masked) {          \
        const int64_t G = mode == 2 ? 4 : (mode == 1 ? 3 : 2);                                                      \
        REAL *cs = mode ? c : h; /* mode f: h is c */                                                               \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = 0; t < T; ++t) {                                                                       \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(h + o, 0, (size_t)H * sizeof(REAL));                                                 \
                        if (mode) memset(c + o, 0, (size_t)H * sizeof(REAL));                                       \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *p = pre + (r * T + t) * G * H;                                                      \
                    const REAL *m = masked ? mask + o : 0;                                                          \
                    const REAL *prev = t ? cs + o - H : c0 + r * H;                                                 \
                    REAL *ct = cs + o, *y = h + o;                                                                  \
                    RS_COLUMNS_UP(REAL, H,                                                                          \
                                  RS_CAT(rs_qrnn_col, SUFFIX)(j, p, bias, m, prev, ct, y, mode, masked, H));        \
                }                                                                                                   \
            }                                                                                                       \
            RS_FINALS(REAL, len, T, H, b0, b1, cs, c0, final)                                                       \
        });                                                                                                         \
    }                                                                                                               \
                                                                                                                    \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_f, SUFFIX)(RS_QF_PARAMS(REAL)) {                                         \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 0, 0);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_f_mask, SUFFIX)(RS_QF_PARAMS(REAL)) {                                    \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 0, 1);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_fo, SUFFIX)(RS_QF_PARAMS(REAL)) {                                        \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 1, 0);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_fo_mask, SUFFIX)(RS_QF_PARAMS(REAL)) {                                   \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 1, 1);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_ifo, SUFFIX)(RS_QF_PARAMS(REAL)) {                                       \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 2, 0);                                                     \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_forward_ifo_mask, SUFFIX)(RS_QF_PARAMS(REAL)) {                                  \
        RS_CAT(rs_qrnn_forward_body, SUFFIX)(RS_QF_ARGS, 2, 1);                                                     \
    }                                                                                                               \
                                                                                                                    \
    /* QRNN's forward from the projection pre (B, T, G H) and its bias (G H) (mode 0 f, 1 fo, 2 ifo): h (0          \
     * past each length), c (every step's c_t, 0 past each length; modes fo and ifo, NULL for mode f,               \
     * whose h is c) and final (each row's last c). mask: the zoneout mask (B, T, H), or NULL. */                   \
    void RS_CAT(rs_qrnn_forward, SUFFIX)(const REAL *pre, const REAL *bias, const REAL *mask, const REAL *c0,       \
                                        const int64_t *len, int64_t mode, REAL *h, REAL *c, REAL *final,            \
                                        int64_t B, int64_t T, int64_t H) {                                          \
        typedef void (*variant)(RS_QF_PARAMS(REAL));                                                                \
        static const variant variants[3][2] = {                                                                     \
            {RS_CAT(rs_qrnn_forward_f, SUFFIX), RS_CAT(rs_qrnn_forward_f_mask, SUFFIX)},                            \
            {RS_CAT(rs_qrnn_forward_fo, SUFFIX), RS_CAT(rs_qrnn_forward_fo_mask, SUFFIX)},                          \
            {RS_CAT(rs_qrnn_forward_ifo, SUFFIX), RS_CAT(rs_qrnn_forward_ifo_mask, SUFFIX)},                        \
        };                                                                                                          \
        variants[mode][mask != 0](RS_QF_ARGS);                                                                      \
    }                                                                                                               \
                                                                                                                    \
    /* Column j of a valid step of the backward, as the reference's vjp: the activations again from p,              \
     * then with g = carry + dc (dc = dh o, or dh in mode f), the pooling's da = g c_{t-1} and db = g:              \
     * df_eff = da - db z and dz = db (1 - f_eff) (f, fo), or df_eff = da, dz = db i, di = db z i (1 - i)           \
     * (ifo); df = df_eff (1 - m), 0 where m = 1; dpre = dz (1 - z^2), df f (1 - f), [di], [dh c o (1 - o)];        \
     * carry = g f_eff. ct: c_t (modes fo, ifo). */                                                                 \
    RS_ALWAYS_INLINE void RS_CAT(rs_qrnn_back_col, SUFFIX)(int64_t j, const REAL *restrict p,                       \
                                                          const REAL *restrict bias, const REAL *restrict m,        \
                                                          const REAL *restrict prev, const REAL *restrict ct,       \
                                                          const REAL *restrict d, REAL *restrict carry,             \
                                                          REAL *restrict gp, double *restrict bsum, int mode,       \
                                                          int masked, int64_t H) {                                  \
        const int64_t io = 2 * H, oo = (mode == 2 ? 3 : 2) * H;                                                     \
        REAL z = TANH(p[j] + bias[j]);                                                                              \
        REAL f = SIGMOID(p[H + j] + bias[H + j]);                                                                   \
        REAL fe = masked ? (m[j] == 1 ? (REAL)1 : f + ((REAL)1 - f) * m[j]) : f;                                    \
        REAL o = mode ? SIGMOID(p[oo + j] + bias[oo + j]) : (REAL)1;                                                \
        REAL g = carry[j] + (mode ? d[j] * o : d[j]);                                                               \
        REAL da = g * prev[j];                                                                                      \
        REAL dfe, dz;                                                                                               \
        if (mode == 2) {                                                                                            \
            REAL i = SIGMOID(p[io + j] + bias[io + j]);                                                             \
            dfe = da;                                                                                               \
            dz = g * i;                                                                                             \
            REAL gi = g * z * i * ((REAL)1 - i);                                                                    \
            gp[io + j] = gi;                                                                                        \
            bsum[io + j] += (double)gi;                                                                             \
        } else {                                                                                                    \
            dfe = da - g * z;                                                                                       \
            dz = g * ((REAL)1 - fe);                                                                                \
        }                                                                                                           \
        REAL df = masked ? (m[j] == 1 ? (REAL)0 : dfe * ((REAL)1 - m[j])) : dfe;                                    \
        REAL gz = dz * ((REAL)1 - z * z), gf = df * f * ((REAL)1 - f);                                              \
        gp[j] = gz;                                                                                                 \
        gp[H + j] = gf;                                                                                             \
        bsum[j] += (double)gz;                                                                                      \
        bsum[H + j] += (double)gf;                                                                                  \
        if (mode) {                                                                                                 \
            REAL go = d[j] * ct[j] * o * ((REAL)1 - o);                                                             \
            gp[oo + j] = go;                                                                                        \
            bsum[oo + j] += (double)go;                                                                             \
        }                                                                                                           \
        carry[j] = g * fe;                                                                                          \
    }                                                                                                               \
                                                                                                                    \
    RS_ALWAYS_INLINE void RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_PARAMS(REAL), int mode, int masked) {         \
        const int64_t G = mode == 2 ? 4 : (mode == 1 ? 3 : 2);                                                      \
        RS_START_CARRIES(REAL, dc0, dfinal, B, H);                                                                  \
        memset(acc, 0, (size_t)(G * H) * sizeof(double));                                                           \
        RS_BLOCKS(B, H, b0, b1, {                                                                                   \
            for (int64_t t = T - 1; t >= 0; --t) {                                                                  \
                for (int64_t r = b0; r < b1; ++r) {                                                                 \
                    const int64_t o = (r * T + t) * H;                                                              \
                    REAL *gp = dpre + (r * T + t) * G * H;                                                          \
                    if (t >= rs_steps(len, r, T)) {                                                                 \
                        memset(gp, 0, (size_t)(G * H) * sizeof(REAL));                                              \
                        continue;                                                                                   \
                    }                                                                                               \
                    const REAL *p = pre + (r * T + t) * G * H;                                                      \
                    const REAL *m = masked ? mask + o : 0;                                                          \
                    const REAL *prev = t ? c + o - H : c0 + r * H;                                                  \
                    const REAL *d = dh + r * sb + t * st;                                                           \
                    REAL *carry = dc0 + r * H;                                                                      \
                    RS_COLUMNS_DOWN(REAL, H,                                                                        \
                                    RS_CAT(rs_qrnn_back_col, SUFFIX)(j, p, bias, m, prev, c + o, d, carry, gp,      \
                                                                     acc, mode, masked, H));                        \
                }                                                                                                   \
            }                                                                                                       \
        });                                                                                                         \
        for (int64_t k = 0; k < G * H; ++k) dbias[k] = (REAL)acc[k];                                                \
    }                                                                                                               \
                                                                                                                    \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_f, SUFFIX)(RS_QB_PARAMS(REAL)) {                                        \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 0, 0);                                                    \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_f_mask, SUFFIX)(RS_QB_PARAMS(REAL)) {                                   \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 0, 1);                                                    \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_fo, SUFFIX)(RS_QB_PARAMS(REAL)) {                                       \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 1, 0);                                                    \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_fo_mask, SUFFIX)(RS_QB_PARAMS(REAL)) {                                  \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 1, 1);                                                    \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_ifo, SUFFIX)(RS_QB_PARAMS(REAL)) {                                      \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 2, 0);                                                    \
    }                                                                                                               \
    RS_VARIANT void RS_CAT(rs_qrnn_backward_ifo_mask, SUFFIX)(RS_QB_PARAMS(REAL)) {                                 \
        RS_CAT(rs_qrnn_backward_body, SUFFIX)(RS_QB_ARGS, 2, 1);                                                    \
    }                                                                                                               \
                                                                                                                    \
    /* QRNN's backward: the cotangents dpre (B, T, G H; 0 past each length), dbias (G H: the sum of dpre            \
     * over rows and steps, accumulated in double in acc, G H doubles of scratch) and dc0, from dh (rows            \
     * at strides sb, st, each contiguous) and dfinal (NULL: zero); c is the forward's c (mode f: its h).           \
     * A broadcast or absent dh is the caller's to lay out (one zero row at strides 0 for none): a variant          \
     * per column stride would double this kernel's compile time. */                                                \
    void RS_CAT(rs_qrnn_backward, SUFFIX)(const REAL *pre, const REAL *bias, const REAL *mask, const REAL *c0,      \
                                         const REAL *c, const int64_t *len, int64_t mode, const REAL *dh,           \
                                         int64_t sb, int64_t st, const REAL *dfinal, REAL *dpre, REAL *dbias,       \
                                         REAL *dc0, double *acc, int64_t B, int64_t T, int64_t H) {                 \
        typedef void (*variant)(RS_QB_PARAMS(REAL));                                                                \
        static const variant variants[3][2] = {                                                                     \
            {RS_CAT(rs_qrnn_backward_f, SUFFIX), RS_CAT(rs_qrnn_backward_f_mask, SUFFIX)},                          \
            {RS_CAT(rs_qrnn_backward_fo, SUFFIX), RS_CAT(rs_qrnn_backward_fo_mask, SUFFIX)},                        \
            {RS_CAT(rs_qrnn_backward_ifo, SUFFIX), RS_CAT(rs_qrnn_backward_ifo_mask, SUFFIX)},                      \
        };                                                                                                          \
        variants[mode][mask != 0](RS_QB_ARGS);                                                                      \
    }

RS_RECURRENCES(float, _f32, rs_expf, rs_sigmoidf, rs_tanhf)
RS_RECURRENCES(double, _f64, rs_exp, rs_sigmoid, rs_tanh)
