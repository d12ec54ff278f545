/* The header's elementwise functions over a buffer: for testing their accuracy against libm. */
#include <stdint.h>

#include "rnnspec_math.h"

#define RS_ELEMENTWISE(REAL, SUFFIX, EXP, SIGMOID, TANH)                                   \
    void RS_CAT(rs_exp, SUFFIX)(const REAL *x, REAL *y, int64_t n) {                       \
        for (int64_t i = 0; i < n; ++i) y[i] = EXP(x[i]);                                  \
    }                                                                                      \
    void RS_CAT(rs_sigmoid, SUFFIX)(const REAL *x, REAL *y, int64_t n) {                   \
        for (int64_t i = 0; i < n; ++i) y[i] = SIGMOID(x[i]);                              \
    }                                                                                      \
    void RS_CAT(rs_tanh, SUFFIX)(const REAL *x, REAL *y, int64_t n) {                      \
        for (int64_t i = 0; i < n; ++i) y[i] = TANH(x[i]);                                 \
    }

RS_ELEMENTWISE(float, _f32, rs_expf, rs_sigmoidf, rs_tanhf)
RS_ELEMENTWISE(double, _f64, rs_exp, rs_sigmoid, rs_tanh)
