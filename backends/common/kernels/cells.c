/* The elementwise work of one step of the adaptive ops' training loops (Skip RNN, ACT), forward and backward.
 *
 * The torch backend's Functions (backends/torch/skip_autograd.py, act_autograd.py) keep the matmuls in torch
 * (into preallocated buffers) and call here once per layer and step for everything between them: the base
 * cell's gates and activations (rnn, lstm, gru with the reset gate after or before the matmul, indrnn), the
 * skip gate's bookkeeping (u~, its binarisation, the state mix, update_prob, cum) and ACT's halting
 * arithmetic, writing what the backward reads; and, walking back, the cotangents of the step's
 * pre-activations, the gate's scalars and the previous state's elementwise part. The arithmetic is the
 * Python loops' operation for operation (the same expressions in the same order, and no shortcut where a
 * mask zeroes a term: 0 * NaN must stay NaN where autograd's would); the docstrings of those modules and of
 * cell_backward.py give the equations.
 *
 * Layout: every buffer is row-major with the batch row outermost, each row's H (or G H) columns contiguous;
 * a row's gates are blocks of H columns in torch's order (lstm i f g o, gru r z n). Saved activations
 * ("aux", A blocks a row): lstm i f g o tanh(c); gru r z n and gh_n (reset after) or r z n r*h (before).
 * Masks are bytes (torch.bool). Where a buffer is one step of a (B, T, ...) tensor, its row stride is
 * given. Cells: 0 rnn, 1 lstm, 2 gru (reset after), 3 gru (reset before), 4 indrnn; relu selects rnn's and
 * indrnn's activation (else tanh).
 *
 * The body below is instantiated for float and double by including this file twice (see the end).
 */
#ifndef CELLS_BODY

#include <stdint.h>
#include <string.h>

#include "rnnspec_math.h"

enum { CELL_RNN = 0, CELL_LSTM = 1, CELL_GRU = 2, CELL_GRU_BEFORE = 3, CELL_INDRNN = 4 };

/* Gate blocks of the pre-activations and saved activation blocks, by cell. */
static const int64_t GATES[] = {1, 4, 3, 3, 1};
static const int64_t AUX[] = {0, 5, 4, 4, 0};

#define CELLS_BODY
#define REAL float
#define SUFFIX _f32
#define EXP rs_expf
#define SIGMOID rs_sigmoidf
#define TANH rs_tanhf
#include "cells.c"
#undef REAL
#undef SUFFIX
#undef EXP
#undef SIGMOID
#undef TANH
#define REAL double
#define SUFFIX _f64
#define EXP rs_exp
#define SIGMOID rs_sigmoid
#define TANH rs_tanh
#include "cells.c"

#else /* CELLS_BODY: the kernels over REAL */

#define FN(name) RS_CAT(name, SUFFIX)

/* sum_j x_j y_j over 16 running sums, summed at the end: the compiler vectorises it without reassociating
 * (no -ffast-math), and the order is fixed, so a value does not depend on the instruction set. */
#define DOT_LANES 16
static inline REAL FN(dot)(int64_t n, const REAL *restrict x, const REAL *restrict y) {
    REAL acc[DOT_LANES] = {0};
    int64_t j = 0;
    for (; j + DOT_LANES <= n; j += DOT_LANES)
        for (int k = 0; k < DOT_LANES; ++k) acc[k] += x[j + k] * y[j + k];
    REAL s = 0;
    for (int k = 0; k < DOT_LANES; ++k) s += acc[k];
    for (; j < n; ++j) s += x[j] * y[j];
    return s;
}

/* sum_j d_j (a_j - b_j), d_j = keep ? x_j (+ e_j) : 0: the skip gate's <d s', S - s> (difference first). */
static inline REAL FN(dot_diff)(int64_t n, int keep, const REAL *restrict x, const REAL *restrict e,
                                const REAL *restrict a, const REAL *restrict b) {
    REAL acc[DOT_LANES] = {0};
    REAL s = 0;
    int64_t j = 0;
    if (!keep) { /* d = 0, still multiplied: a NaN or infinite difference makes the sum NaN, as in torch */
        for (; j + DOT_LANES <= n; j += DOT_LANES)
            for (int k = 0; k < DOT_LANES; ++k) acc[k] += (REAL)0 * (a[j + k] - b[j + k]);
        for (int k = 0; k < DOT_LANES; ++k) s += acc[k];
        for (; j < n; ++j) s += (REAL)0 * (a[j] - b[j]);
    } else if (e) {
        for (; j + DOT_LANES <= n; j += DOT_LANES)
            for (int k = 0; k < DOT_LANES; ++k) acc[k] += (x[j + k] + e[j + k]) * (a[j + k] - b[j + k]);
        for (int k = 0; k < DOT_LANES; ++k) s += acc[k];
        for (; j < n; ++j) s += (x[j] + e[j]) * (a[j] - b[j]);
    } else {
        for (; j + DOT_LANES <= n; j += DOT_LANES)
            for (int k = 0; k < DOT_LANES; ++k) acc[k] += x[j + k] * (a[j + k] - b[j + k]);
        for (int k = 0; k < DOT_LANES; ++k) s += acc[k];
        for (; j < n; ++j) s += x[j] * (a[j] - b[j]);
    }
    return s;
}

/* -- one row of each cell's forward ------------------------------------------------------------------- */

/* rnn and indrnn: act(gi + r), r the recurrent term (the matmul's row, or u h for indrnn). */
static inline void FN(activate_row)(int64_t H, int64_t relu, const REAL *restrict gi, const REAL *restrict r,
                                    REAL *restrict out) {
    if (relu) {
        for (int64_t j = 0; j < H; ++j) {
            REAL a = gi[j] + r[j];
            out[j] = a < (REAL)0 ? (REAL)0 : a; /* NaN stays NaN, as torch.relu */
        }
    } else {
        for (int64_t j = 0; j < H; ++j) out[j] = TANH(gi[j] + r[j]);
    }
}

static inline void FN(indrnn_row)(int64_t H, int64_t relu, const REAL *restrict gi, const REAL *restrict u,
                                  const REAL *restrict h, REAL *restrict out) {
    if (relu) {
        for (int64_t j = 0; j < H; ++j) {
            REAL a = gi[j] + u[j] * h[j];
            out[j] = a < (REAL)0 ? (REAL)0 : a;
        }
    } else {
        for (int64_t j = 0; j < H; ++j) out[j] = TANH(gi[j] + u[j] * h[j]);
    }
}

static inline void FN(lstm_row)(int64_t H, const REAL *restrict gi, const REAL *restrict gh,
                                const REAL *restrict c, REAL *restrict out_h, REAL *restrict out_c,
                                REAL *restrict aux) {
    for (int64_t j = 0; j < H; ++j) {
        REAL i = SIGMOID(gi[j] + gh[j]);
        REAL f = SIGMOID(gi[H + j] + gh[H + j]);
        REAL g = TANH(gi[2 * H + j] + gh[2 * H + j]);
        REAL o = SIGMOID(gi[3 * H + j] + gh[3 * H + j]);
        REAL cn = f * c[j] + i * g;
        REAL tc = TANH(cn);
        out_c[j] = cn;
        out_h[j] = o * tc;
        aux[j] = i;
        aux[H + j] = f;
        aux[2 * H + j] = g;
        aux[3 * H + j] = o;
        aux[4 * H + j] = tc;
    }
}

/* gru, reset after the matmul: n = tanh(gi_n + r gh_n). */
static inline void FN(gru_row)(int64_t H, const REAL *restrict gi, const REAL *restrict gh,
                               const REAL *restrict h, REAL *restrict out_h, REAL *restrict aux) {
    for (int64_t j = 0; j < H; ++j) {
        REAL r = SIGMOID(gi[j] + gh[j]);
        REAL z = SIGMOID(gi[H + j] + gh[H + j]);
        REAL ghn = gh[2 * H + j];
        REAL n = TANH(gi[2 * H + j] + r * ghn);
        out_h[j] = ((REAL)1 - z) * n + z * h[j];
        aux[j] = r;
        aux[H + j] = z;
        aux[2 * H + j] = n;
        aux[3 * H + j] = ghn;
    }
}

/* gru, reset before the matmul, second half: n = tanh(gi_n + (r h) W_hn^T + b_hn), r and z already in aux. */
static inline void FN(gru_before_row)(int64_t H, const REAL *restrict gi, const REAL *restrict ghn,
                                      const REAL *restrict h, REAL *restrict out_h, REAL *restrict aux) {
    for (int64_t j = 0; j < H; ++j) {
        REAL z = aux[H + j];
        REAL n = TANH(gi[2 * H + j] + ghn[j]);
        out_h[j] = ((REAL)1 - z) * n + z * h[j];
        aux[2 * H + j] = n;
    }
}

/* The candidate of one row: gh is the row of the step's recurrent matmul (gru before: of its second one). */
static inline void FN(cell_row)(int64_t cell, int64_t relu, int64_t H, const REAL *gi, const REAL *gh,
                                const REAL *u, const REAL *h, const REAL *c, REAL *out_h, REAL *out_c, REAL *aux) {
    switch (cell) {
        case CELL_RNN: FN(activate_row)(H, relu, gi, gh, out_h); break;
        case CELL_LSTM: FN(lstm_row)(H, gi, gh, c, out_h, out_c, aux); break;
        case CELL_GRU: FN(gru_row)(H, gi, gh, h, out_h, aux); break;
        case CELL_GRU_BEFORE: FN(gru_before_row)(H, gi, gh, h, out_h, aux); break;
        default: FN(indrnn_row)(H, relu, gi, u, h, out_h); break;
    }
}

/* gru, reset before the matmul, first half (before the second matmul, which reads r h from aux):
 * r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z) with gh the (B, 2H) product of h and W_hr, W_hz. */
static inline void FN(gru_gates_row)(int64_t H, const REAL *restrict gi, const REAL *restrict gh,
                                     const REAL *restrict h, REAL *restrict aux) {
    for (int64_t j = 0; j < H; ++j) {
        REAL r = SIGMOID(gi[j] + gh[j]);
        aux[j] = r;
        aux[H + j] = SIGMOID(gi[H + j] + gh[H + j]);
        aux[3 * H + j] = r * h[j];
    }
}

void FN(gru_before_gates)(int64_t B, int64_t H, const REAL *gi, int64_t gi_stride, const REAL *gh,
                          const REAL *h, REAL *aux) {
    for (int64_t b = 0; b < B; ++b)
        FN(gru_gates_row)(H, gi + b * gi_stride, gh + b * 2 * H, h + b * H, aux + b * 4 * H);
}

/* -- one row of each cell's backward ------------------------------------------------------------------- */

/* From the candidate's cotangents dh (and lstm's dc): the pre-activations' cotangent d_gi; d_gh where the
 * recurrent matmul's differs (gru after: its n block is d a_n r), else NULL; and the previous state's
 * elementwise terms added to dprev_h (gru: dh z; indrnn: d a u) and dprev_c (lstm: dc f). The factors are
 * cell_backward.factors' products, in its order. gru before: the z and n blocks only (the r block needs
 * (d a_n) W_hn: gru_before_backward). */
static inline void FN(cell_back_row)(int64_t cell, int64_t relu, int64_t H, const REAL *restrict dh,
                                     const REAL *restrict dc, const REAL *restrict h, const REAL *restrict c,
                                     const REAL *restrict out_h, const REAL *restrict aux, const REAL *restrict u,
                                     REAL *restrict d_gi, REAL *restrict d_gh, REAL *restrict dprev_h,
                                     REAL *restrict dprev_c) {
    switch (cell) {
        case CELL_RNN:
        case CELL_INDRNN:
            if (relu) {
                for (int64_t j = 0; j < H; ++j) d_gi[j] = dh[j] * (out_h[j] > (REAL)0 ? (REAL)1 : (REAL)0);
            } else {
                for (int64_t j = 0; j < H; ++j) d_gi[j] = dh[j] * ((REAL)1 - out_h[j] * out_h[j]);
            }
            if (cell == CELL_INDRNN)
                for (int64_t j = 0; j < H; ++j) dprev_h[j] += d_gi[j] * u[j];
            break;
        case CELL_LSTM:
            for (int64_t j = 0; j < H; ++j) {
                REAL i = aux[j], f = aux[H + j], g = aux[2 * H + j], o = aux[3 * H + j], tc = aux[4 * H + j];
                REAL dcc = dc[j] + dh[j] * (o * ((REAL)1 - tc * tc));
                d_gi[j] = dcc * ((g * i) * ((REAL)1 - i));
                d_gi[H + j] = dcc * ((c[j] * f) * ((REAL)1 - f));
                d_gi[2 * H + j] = dcc * (i * ((REAL)1 - g * g));
                d_gi[3 * H + j] = dh[j] * ((tc * o) * ((REAL)1 - o));
                dprev_c[j] += dcc * f;
            }
            break;
        case CELL_GRU:
            for (int64_t j = 0; j < H; ++j) {
                REAL r = aux[j], z = aux[H + j], n = aux[2 * H + j], ghn = aux[3 * H + j];
                REAL not_z = (REAL)1 - z;
                REAL a_n = not_z * ((REAL)1 - n * n);
                REAL a_z = ((h[j] - n) * z) * not_z;
                REAL a_r = ((a_n * ghn) * r) * ((REAL)1 - r);
                REAL d_ar = dh[j] * a_r, d_az = dh[j] * a_z;
                d_gi[j] = d_ar;
                d_gi[H + j] = d_az;
                d_gi[2 * H + j] = dh[j] * a_n;
                d_gh[j] = d_ar;
                d_gh[H + j] = d_az;
                d_gh[2 * H + j] = dh[j] * (a_n * r);
                dprev_h[j] += dh[j] * z;
            }
            break;
        default: /* CELL_GRU_BEFORE */
            for (int64_t j = 0; j < H; ++j) {
                REAL z = aux[H + j], n = aux[2 * H + j];
                REAL not_z = (REAL)1 - z;
                d_gi[H + j] = dh[j] * (((h[j] - n) * z) * not_z);
                d_gi[2 * H + j] = dh[j] * (not_z * ((REAL)1 - n * n));
                dprev_h[j] += dh[j] * z;
            }
            break;
    }
}

/* gru before, after the product d_rh = (d a_n) W_hn: the r block d a_r = d_rh h r (1 - r) of d_gi (B, 3H)
 * and d_rh r added to dprev_h. */
void FN(gru_before_backward)(int64_t B, int64_t H, const REAL *d_rh, const REAL *h, const REAL *aux, REAL *d_gi,
                             REAL *dprev_h) {
    for (int64_t b = 0; b < B; ++b) {
        const REAL *restrict d = d_rh + b * H;
        const REAL *restrict h_b = h + b * H;
        const REAL *restrict a = aux + b * 4 * H;
        REAL *restrict g = d_gi + b * 3 * H;
        REAL *restrict dp = dprev_h + b * H;
        for (int64_t j = 0; j < H; ++j) {
            REAL r = a[j];
            g[j] = d[j] * ((h_b[j] * r) * ((REAL)1 - r));
            dp[j] += d[j] * r;
        }
    }
}

/* ACT: an inner step's pre-activation cotangent d_gi summed into its input step's, walking the inner steps
 * backwards: later holds the sum over the inner steps after the first (their input carries the flag column),
 * which goes to the flag's accumulator at the first inner step (last = 1), where proj = later + d_gi. The
 * sums start from zero, as act_autograd's index_add_ into zeros. */
static inline void FN(accumulate_row)(int64_t n, int64_t first, int64_t last, const REAL *restrict d_gi,
                                      REAL *restrict proj, REAL *restrict later, REAL *restrict flag) {
    if (first && last) {
        for (int64_t j = 0; j < n; ++j) proj[j] = (REAL)0 + d_gi[j];
    } else if (first) {
        for (int64_t j = 0; j < n; ++j) later[j] = (REAL)0 + d_gi[j];
    } else if (last) {
        for (int64_t j = 0; j < n; ++j) {
            proj[j] = later[j] + d_gi[j];
            flag[j] += later[j];
        }
    } else {
        for (int64_t j = 0; j < n; ++j) later[j] += d_gi[j];
    }
}

/* -- Skip RNN ------------------------------------------------------------------------------------------ */

/* One layer of one step of the training loop (skip_autograd's forward): the candidate from the state (h, c)
 * and the step's pre-activations (gi, row stride gi_stride; gh the recurrent matmul, (B, G H)), written to
 * cand and aux; the gate u = bin(u~) of u~ = cum + min(prob, 1 - cum) from the top layer's state before
 * the step; the state after it, keep ? u S + (1 - u) s : s (S the candidate), into *_next. The top layer
 * (top = 1) also forms du~ = sigmoid(cand_g . w_gate + b_gate), the new update_prob and cum, the step's
 * fields (y (row stride y_stride), gate, prob (row stride f_stride); zeros past a row's length) and the
 * saved scalars u~, bin(u~), du~ and the logit a. keep is NULL when every row is valid. */
void FN(skip_forward)(int64_t cell, int64_t relu, int64_t B, int64_t H, int64_t top, int64_t gate_c,
                      const REAL *gi, int64_t gi_stride, const REAL *gh, const REAL *h, const REAL *c,
                      REAL *cand_h, REAL *cand_c, REAL *aux, REAL *h_next, REAL *c_next, const REAL *prob,
                      const REAL *cum, const uint8_t *keep, int64_t keep_stride, const REAL *w_gate,
                      const REAL *b_gate, REAL *u_tilde_s, uint8_t *on_s, REAL *du_s, REAL *a_s,
                      REAL *prob_next, REAL *cum_next, REAL *y, int64_t y_stride, REAL *gate_f, REAL *prob_f,
                      int64_t f_stride) {
    const int64_t G = GATES[cell], A = AUX[cell];
    const int64_t gh_width = cell == CELL_GRU_BEFORE ? H : G * H;
    const int lstm = cell == CELL_LSTM;
    for (int64_t b = 0; b < B; ++b) {
        const int kp = keep ? keep[b * keep_stride] != 0 : 1;
        /* The gate, as skip_autograd.gate: min(p, 1 - cum) keeps p on ties and where p is NaN. */
        const REAL p = prob[b], cm = cum[b];
        const REAL room = (REAL)1 - cm;
        const REAL ut = cm + (room < p ? room : p);
        const int on = ut >= (REAL)0.5;
        const REAL th = ut != ut ? (REAL)0 : ut - ut; /* the straight-through term: 0, NaN where u~ is infinite */
        const REAL *h_b = h + b * H;
        REAL *ch = cand_h + b * H;
        FN(cell_row)(cell, relu, H, gi + b * gi_stride, gh ? gh + b * gh_width : NULL, NULL, h_b,
                     lstm ? c + b * H : NULL, ch, lstm ? cand_c + b * H : NULL, A ? aux + b * A * H : NULL);
        /* The mix, as skip_autograd.mix: exactly S or s, plus th (S - s). */
        {
            REAL *restrict hn = h_next + b * H;
            const REAL *restrict s = h_b;
            const REAL *restrict S = ch;
            for (int64_t j = 0; j < H; ++j) {
                REAL v = (on ? S[j] : s[j]) + th * (S[j] - s[j]);
                hn[j] = kp ? v : s[j];
            }
        }
        if (lstm) {
            REAL *restrict cn = c_next + b * H;
            const REAL *restrict s = c + b * H;
            const REAL *restrict S = cand_c + b * H;
            for (int64_t j = 0; j < H; ++j) {
                REAL v = (on ? S[j] : s[j]) + th * (S[j] - s[j]);
                cn[j] = kp ? v : s[j];
            }
        }
        if (!top) continue;
        const REAL *g = gate_c ? cand_c + b * H : ch;
        const REAL a = FN(dot)(H, g, w_gate) + b_gate[0];
        const REAL du = SIGMOID(a);
        const REAL u = (REAL)(on ? 1 : 0) + th;
        u_tilde_s[b] = ut;
        on_s[b] = (uint8_t)on;
        du_s[b] = du;
        a_s[b] = a;
        const REAL new_p = (on ? du : p) + th * (du - p);
        const REAL new_cum = ((REAL)1 - u) * ut;
        prob_next[b] = kp ? new_p : p;
        cum_next[b] = kp ? new_cum : cm;
        REAL *restrict y_b = y + b * y_stride;
        const REAL *restrict hn = h_next + b * H;
        for (int64_t j = 0; j < H; ++j) y_b[j] = kp ? hn[j] : (REAL)0;
        gate_f[b * f_stride] = kp ? u : (REAL)0;
        prob_f[b * f_stride] = kp ? ut : (REAL)0;
    }
}

/* One layer of one step of skip_autograd's backward, before the step's matmuls. d_h, d_c hold the layer's
 * state cotangent after the step (every matmul of the later steps added) and receive the elementwise part
 * of the one before it: (bin(u~) ? 0 : d) + the cell's terms, plus, past a row's length, the whole d. The
 * candidate's cotangent is bin(u~) d (+ x_h, the upper layer's d_gi W_ih, for lower layers); d_gi, d_gh
 * (NULL: the same as d_gi) receive the pre-activations' cotangents, dcand is (B, 2H) scratch.
 *
 * The top layer (top = 1) first does the gate's part: from table (4 int64 per state entry of every layer:
 * the address of its cotangent, of its candidates (T, B, H), of its states (T + 1, B, H), and H), the
 * output's cotangent d_out (row stride d_out_stride) and the fields' d_gate, d_pf (row stride f_stride),
 * the saved scalars and the top state's (p, cum) before the step, it forms d u, d u~ and d a (written to
 * d_a_s), adds d a w_gate to the gate input's candidate cotangent, and updates d_p, d_cum in place. */
void FN(skip_backward)(int64_t cell, int64_t relu, int64_t B, int64_t H, int64_t top, int64_t gate_c, int64_t t,
                       const REAL *h, const REAL *c, const REAL *cand_h, const REAL *aux, const uint8_t *on_s,
                       const uint8_t *keep, int64_t keep_stride, REAL *d_h, REAL *d_c, const REAL *x_h,
                       REAL *dcand, REAL *d_gi, REAL *d_gh, const int64_t *table, int64_t entries, int64_t top_h,
                       const REAL *d_out, int64_t d_out_stride, const REAL *d_gate, const REAL *d_pf,
                       int64_t f_stride, const REAL *u_tilde_s, const REAL *du_s, const REAL *a_s,
                       const REAL *prob, const REAL *cum, REAL *d_p, REAL *d_cum, const REAL *w_gate,
                       REAL *d_a_s) {
    const int64_t G = GATES[cell], A = AUX[cell];
    const int lstm = cell == CELL_LSTM;
    for (int64_t b = 0; b < B; ++b) {
        const int kp = keep ? keep[b * keep_stride] != 0 : 1;
        const int on = on_s[b] != 0;
        const REAL *dout_b = top ? d_out + b * d_out_stride : NULL;
        REAL d_a = 0;
        if (top) {
            const REAL dp = kp ? d_p[b] : (REAL)0, dcm = kp ? d_cum[b] : (REAL)0;
            const REAL dg = kp ? d_gate[b * f_stride] : (REAL)0, dpf = kp ? d_pf[b * f_stride] : (REAL)0;
            const REAL ut = u_tilde_s[b], du = du_s[b], a = a_s[b], p = prob[b], cm = cum[b];
            const REAL th = ut != ut ? (REAL)0 : ut - ut;
            const REAL not_u = (REAL)1 - ((REAL)(on ? 1 : 0) + th);
            /* d u = d_gate + d_p (du~ - p) - d_cum u~ + sum over every layer's entries of <d s', S - s>. */
            REAL d_u = (dg + dp * (du - p)) - dcm * ut;
            for (int64_t e = 0; e < entries; ++e) {
                const int64_t *row = table + 4 * e;
                const int64_t He = row[3];
                const REAL *de = (const REAL *)(intptr_t)row[0] + b * He;
                const REAL *ce = (const REAL *)(intptr_t)row[1] + (t * B + b) * He;
                const REAL *se = (const REAL *)(intptr_t)row[2] + (t * B + b) * He;
                d_u += FN(dot_diff)(He, kp, de, e == top_h ? dout_b : NULL, ce, se);
            }
            const REAL d_ut = (ut != ut ? (REAL)0 : d_u) + (dpf + dcm * not_u);
            const REAL slope = du * SIGMOID(-a); /* d du~ / d a, accurate where du~ saturates */
            d_a = (on ? dp : (REAL)0) * slope;
            d_a_s[b] = d_a;
            const REAL to_p = !(((REAL)1 - cm) < p) ? d_ut : (REAL)0; /* min picked p: ties and NaN p too */
            d_p[b] = ((on ? (REAL)0 : dp) + to_p) + (kp ? (REAL)0 : d_p[b]);
            d_cum[b] = to_p + (kp ? (REAL)0 : d_cum[b]);
        }
        /* The candidate's cotangent and the pass-through part of the previous state's. */
        REAL *restrict dch = dcand + b * 2 * H;
        REAL *restrict dcc = dch + H;
        {
            REAL *restrict d = d_h + b * H;
            const REAL *restrict x = x_h ? x_h + b * H : NULL;
            const REAL *restrict w = (top && !gate_c) ? w_gate : NULL;
            for (int64_t j = 0; j < H; ++j) {
                REAL dn = kp ? (dout_b ? d[j] + dout_b[j] : d[j]) : (REAL)0;
                REAL v = on ? dn : (REAL)0;
                if (x) v = v + x[j];
                if (w) v = v + d_a * w[j];
                dch[j] = v;
                d[j] = (on ? (REAL)0 : dn) + (kp ? (REAL)0 : d[j]);
            }
        }
        if (lstm) {
            REAL *restrict d = d_c + b * H;
            const REAL *restrict w = (top && gate_c) ? w_gate : NULL;
            for (int64_t j = 0; j < H; ++j) {
                REAL dn = kp ? d[j] : (REAL)0;
                REAL v = on ? dn : (REAL)0;
                if (w) v = v + d_a * w[j];
                dcc[j] = v;
                d[j] = (on ? (REAL)0 : dn) + (kp ? (REAL)0 : d[j]);
            }
        }
        REAL *gi_b = d_gi + b * G * H;
        FN(cell_back_row)(cell, relu, H, dch, dcc, h + b * H, lstm ? c + b * H : NULL, cand_h + b * H,
                          A ? aux + b * A * H : NULL, NULL, gi_b, d_gh ? d_gh + b * G * H : NULL, d_h + b * H,
                          lstm ? d_c + b * H : NULL);
    }
}

/* -- ACT ----------------------------------------------------------------------------------------------- */

/* Inner step n (1-based, of at most cap) of an input step of act_autograd's forward. The step's input
 * state (prev_h, prev_c) is first copied to p_h, p_c (saved); the candidate goes to cand and aux, its
 * halting unit h = sigmoid(cand_h . w_halt + b_halt) and act_autograd.halt's bookkeeping update the
 * running total, halted, steps, remainder and mean-field state (mean_h, mean_c; started at n = 1), and
 * the step's h, weight, active and stop are saved. When every row has halted (*done = 1), the input step
 * ends as act_autograd.settle: st (the state across input steps) takes the mean where the row is valid,
 * and y (row stride y_stride), N and R (row stride f_stride) are written. gi: x_t's projection, plus flag
 * (w_ih's flag column; NULL at n = 1) summed into the (B, G H) scratch gi_flag; gh: the recurrent matmul;
 * u: indrnn's recurrent weights. (ACT ponders gru with its reset gate after the matmul only.) */
void FN(act_forward)(int64_t cell, int64_t relu, int64_t B, int64_t H, int64_t n, int64_t cap, double threshold,
                     const REAL *gi, int64_t gi_stride, const REAL *flag, REAL *gi_flag, const REAL *gh,
                     const REAL *u, const REAL *prev_h, const REAL *prev_c, REAL *p_h, REAL *p_c, REAL *cand_h,
                     REAL *cand_c, REAL *aux,
                     const REAL *w_halt, const REAL *b_halt, REAL *halt_s, REAL *weight_s, uint8_t *active_s,
                     uint8_t *stop_s, REAL *total, uint8_t *halted, REAL *steps, REAL *remainder, REAL *mean_h,
                     REAL *mean_c, const uint8_t *keep, int64_t keep_stride, REAL *st_h, REAL *st_c, REAL *y,
                     int64_t y_stride, REAL *n_out, REAL *r_out, int64_t f_stride, int64_t *done) {
    const int64_t G = GATES[cell], A = AUX[cell];
    const int64_t gh_width = G * H;
    const int lstm = cell == CELL_LSTM;
    const REAL thr = (REAL)threshold, count = (REAL)n;
    int all = 1;
    if (prev_h != p_h) memcpy(p_h, prev_h, (size_t)(B * H) * sizeof(REAL));
    if (lstm && prev_c != p_c) memcpy(p_c, prev_c, (size_t)(B * H) * sizeof(REAL));
    for (int64_t b = 0; b < B; ++b) {
        REAL *ch = cand_h + b * H;
        const REAL *gi_b = gi + b * gi_stride;
        if (flag) { /* inner steps after the first: (gi + flag) + gh, as act_autograd adds them */
            REAL *restrict x = gi_flag + b * G * H;
            const REAL *restrict g = gi_b;
            for (int64_t j = 0; j < G * H; ++j) x[j] = g[j] + flag[j];
            gi_b = x;
        }
        FN(cell_row)(cell, relu, H, gi_b, gh ? gh + b * gh_width : NULL, u, p_h + b * H,
                     lstm ? p_c + b * H : NULL, ch, lstm ? cand_c + b * H : NULL, A ? aux + b * A * H : NULL);
        const REAL hh = SIGMOID(FN(dot)(H, ch, w_halt) + b_halt[0]);
        if (n == 1) { /* act_autograd.begin: rows past their length count as halted */
            total[b] = 0;
            halted[b] = keep ? keep[b * keep_stride] == 0 : 0;
            steps[b] = 0;
            remainder[b] = 0;
        }
        /* act_autograd.halt: a NaN halting unit stops its row (!(sum < threshold)), with R NaN. */
        const int active = !halted[b];
        const REAL summed = total[b] + hh;
        const int stop = n == cap ? active : active && !(summed < thr);
        const REAL rest = hh != hh ? hh : (REAL)1 - total[b];
        const REAL w = stop ? rest : (active ? hh : (REAL)0);
        total[b] = active ? summed : total[b];
        halted[b] = (uint8_t)(halted[b] | stop);
        steps[b] = stop ? count : steps[b];
        remainder[b] = stop ? rest : remainder[b];
        halt_s[b] = hh;
        weight_s[b] = w;
        active_s[b] = (uint8_t)active;
        stop_s[b] = (uint8_t)stop;
        all &= halted[b] != 0;
        {
            REAL *restrict m = mean_h + b * H;
            const REAL *restrict s = ch;
            if (n == 1)
                for (int64_t j = 0; j < H; ++j) m[j] = (REAL)0 + w * s[j];
            else
                for (int64_t j = 0; j < H; ++j) m[j] = m[j] + w * s[j];
        }
        if (lstm) {
            REAL *restrict m = mean_c + b * H;
            const REAL *restrict s = cand_c + b * H;
            if (n == 1)
                for (int64_t j = 0; j < H; ++j) m[j] = (REAL)0 + w * s[j];
            else
                for (int64_t j = 0; j < H; ++j) m[j] = m[j] + w * s[j];
        }
    }
    *done = all;
    if (!all) return;
    for (int64_t b = 0; b < B; ++b) { /* act_autograd.settle */
        const int kp = keep ? keep[b * keep_stride] != 0 : 1;
        REAL *restrict s = st_h + b * H;
        const REAL *restrict m = mean_h + b * H;
        REAL *restrict y_b = y + b * y_stride;
        for (int64_t j = 0; j < H; ++j) {
            s[j] = kp ? m[j] : s[j];
            y_b[j] = kp ? m[j] : (REAL)0;
        }
        if (lstm) {
            REAL *restrict sc = st_c + b * H;
            const REAL *restrict mc = mean_c + b * H;
            for (int64_t j = 0; j < H; ++j) sc[j] = kp ? mc[j] : sc[j];
        }
        n_out[b * f_stride] = kp ? steps[b] : (REAL)0;
        r_out[b * f_stride] = kp ? remainder[b] : (REAL)0;
    }
}

/* Inner step m of act_autograd's backward, walked from an input step's last inner step (first = 1) to its
 * first (last = 1), before the step's matmuls. At first, the mean-field state's cotangent (dm) is formed from
 * the cotangent of the state after the input step (ds; plus d_out where the row is valid, zero elsewhere)
 * and R's (d_rem, kept in drem). The halting unit's cotangent (d_a_s: of its logit) follows the running
 * cotangent of the halting sum (d_total); the inner state's, w dm (+ dn, the next inner step's, unless
 * first) + d a w_halt, goes through the cell's reverse step: d_gh (B, G H) receives the recurrent matmul's
 * cotangent (the pre-activations' for every cell but gru after, whose d_gi goes to gi_scratch), and the
 * input state's elementwise part goes to dn, or at last to ds, with the part of rows past their length
 * (d itself). The pre-activations' cotangent is summed into the input step's (proj, row stride p_stride)
 * and the flag column's (flag, (B, G H)), through the scratch later (B, G H): accumulate_row. */
void FN(act_backward)(int64_t cell, int64_t relu, int64_t B, int64_t H, int64_t first, int64_t last,
                      const REAL *p_h, const REAL *p_c, const REAL *cand_h, const REAL *cand_c, const REAL *aux,
                      const REAL *halt_s, const REAL *weight_s, const uint8_t *active_s, const uint8_t *stop_s,
                      const REAL *u, const REAL *w_halt, const uint8_t *keep, int64_t keep_stride,
                      const REAL *d_out, int64_t d_out_stride, const REAL *d_rem, int64_t d_rem_stride, REAL *ds_h,
                      REAL *ds_c, REAL *dm_h, REAL *dm_c, REAL *dn_h, REAL *dn_c, REAL *d_total, REAL *drem,
                      REAL *dcand, REAL *gi_scratch, REAL *d_gh, REAL *d_a_s, REAL *proj, int64_t p_stride,
                      REAL *later, REAL *flag) {
    const int64_t G = GATES[cell], A = AUX[cell];
    const int lstm = cell == CELL_LSTM;
    REAL *dst_h = last ? ds_h : dn_h, *dst_c = last ? ds_c : dn_c;
    for (int64_t b = 0; b < B; ++b) {
        const int kp = keep ? keep[b * keep_stride] != 0 : 1;
        const int64_t off = b * H;
        if (first) {
            const REAL *restrict s = ds_h + off;
            const REAL *restrict o = d_out + b * d_out_stride;
            REAL *restrict m = dm_h + off;
            for (int64_t j = 0; j < H; ++j) m[j] = (kp ? s[j] : (REAL)0) + (kp ? o[j] : (REAL)0);
            if (lstm) {
                const REAL *restrict sc = ds_c + off;
                REAL *restrict mc = dm_c + off;
                for (int64_t j = 0; j < H; ++j) mc[j] = kp ? sc[j] : (REAL)0;
            }
            drem[b] = kp ? d_rem[b * d_rem_stride] : (REAL)0;
        }
        /* d p^n = <d s_t, s^n>; the halting unit's, as act_autograd's backward. */
        REAL dw = FN(dot)(H, dm_h + off, cand_h + off);
        if (lstm) dw = dw + FN(dot)(H, dm_c + off, cand_c + off);
        const int active = active_s[b] != 0, stop = stop_s[b] != 0;
        REAL d_hn = (active && !stop) ? dw : (REAL)0;
        const REAL ends = stop ? dw + drem[b] : (REAL)0;
        if (first) {
            d_total[b] = -ends;
        } else {
            d_hn = d_hn + (active ? d_total[b] : (REAL)0);
            d_total[b] = d_total[b] - ends;
        }
        const REAL hh = halt_s[b];
        const REAL d_a = d_hn * (hh * ((REAL)1 - hh));
        d_a_s[b] = d_a;
        const REAL w = weight_s[b];
        /* The inner state's cotangent, then the pass-through part of the input state's. */
        REAL *restrict dch = dcand + b * 2 * H;
        REAL *restrict dcc = dch + H;
        {
            const REAL *restrict m = dm_h + off;
            const REAL *restrict nx = dn_h + off;
            if (first)
                for (int64_t j = 0; j < H; ++j) dch[j] = w * m[j] + d_a * w_halt[j];
            else
                for (int64_t j = 0; j < H; ++j) dch[j] = (nx[j] + w * m[j]) + d_a * w_halt[j];
        }
        if (lstm) {
            const REAL *restrict m = dm_c + off;
            const REAL *restrict nx = dn_c + off;
            if (first)
                for (int64_t j = 0; j < H; ++j) dcc[j] = w * m[j];
            else
                for (int64_t j = 0; j < H; ++j) dcc[j] = nx[j] + w * m[j];
        }
        {
            REAL *restrict d = dst_h + off;
            if (last)
                for (int64_t j = 0; j < H; ++j) d[j] = kp ? (REAL)0 : d[j];
            else
                for (int64_t j = 0; j < H; ++j) d[j] = 0;
        }
        if (lstm) {
            REAL *restrict d = dst_c + off;
            if (last)
                for (int64_t j = 0; j < H; ++j) d[j] = kp ? (REAL)0 : d[j];
            else
                for (int64_t j = 0; j < H; ++j) d[j] = 0;
        }
        REAL *gh_b = d_gh + b * G * H;
        REAL *gi_b = cell == CELL_GRU ? gi_scratch + b * G * H : gh_b;
        FN(cell_back_row)(cell, relu, H, dch, dcc, p_h + off, lstm ? p_c + off : NULL, cand_h + off,
                          A ? aux + b * A * H : NULL, u, gi_b, cell == CELL_GRU ? gh_b : NULL, dst_h + off,
                          lstm ? dst_c + off : NULL);
        FN(accumulate_row)(G * H, first, last, gi_b, proj + b * p_stride, later + b * G * H, flag + b * G * H);
    }
}

#undef FN
#endif /* CELLS_BODY */
