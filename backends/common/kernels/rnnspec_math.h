/* Elementwise math of the native kernels: exp, sigmoid and tanh that the compiler can vectorise.
 *
 * float: branch-free polynomial forms (selects, no calls), accurate to a few ulp, so that a loop
 * over a step's columns compiles to SIMD code; libm's expf/tanhf are scalar calls.
 * double: libm's exp and tanh (the float64 paths are for exactness, not speed).
 *
 * NaN propagates through every function (comparisons with NaN are false, so the selects keep it).
 * Built without -ffast-math, and with -ffp-contract=off: no fused multiply-adds are formed, so a
 * value does not depend on the instruction set the compiler picks.
 */
#ifndef RNNSPEC_MATH_H
#define RNNSPEC_MATH_H

#include <math.h>
#include <stdint.h>

/* e^x in float: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (least squares on
 * Chebyshev nodes, relative error ~1e-7), times 2^n assembled in the exponent bits. Results that
 * would be subnormal (x < -87.3) are 0, and x > 88.7 is inf. */
static inline float rs_expf(float x) {
    const float hi = 88.72283f, lo = -87.33654f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    /* n = round(x / ln2) by the 1.5 * 2^23 shift: the sum's low mantissa bits hold n (no floorf call,
     * which the compiler does not vectorise without -ffast-math). */
    union { float f; int32_t i; } shifted = {.f = xc * 1.44269504f + 12582912.0f};
    float n = shifted.f - 12582912.0f;
    /* ln2 in two parts: n * ln2_hi is exact for |n| < 2^9, so r keeps its low bits. */
    float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 0.00137514074f;
    p = p * r + 0.00836891588f;
    p = p * r + 0.0416695327f;
    p = p * r + 0.166665182f;
    p = p * r + 0.499999881f;
    p = (p * r) * r + r + 1.0f;
    /* 2^n as two normal factors 2^(n/2) 2^(n - n/2): n = 128 (x near the top) or -126 has no one. */
    int32_t k = shifted.i - 0x4B400000, half = k >> 1;
    union { int32_t i; float f; } s1 = {.i = (half + 127) << 23}, s2 = {.i = (k - half + 127) << 23};
    float y = (p * s1.f) * s2.f;
    y = x > hi ? INFINITY : y;
    y = x < lo ? 0.0f : y;
    return x != x ? x : y;
}

/* 1 / (1 + e^-x), with e^-|x| so that neither side loses its relative accuracy. */
static inline float rs_sigmoidf(float x) {
    float e = rs_expf(-fabsf(x));
    float s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : (x != x ? x : e * s);
}

/* tanh: an odd polynomial x + x^3 Q(x^2) below |x| = 0.625 (no cancellation near 0), else
 * sign(x) (1 - e) / (1 + e) with e = e^(-2|x|). */
static inline float rs_tanhf(float x) {
    float a = fabsf(x);
    float z = x * x;
    float q = -0.0056919856f;
    q = q * z + 0.0206262916f;
    q = q * z - 0.0537353195f;
    q = q * z + 0.133313820f;
    q = q * z - 0.333332807f;
    float small = x + x * z * q;
    float e = rs_expf(-2.0f * a);
    float big = (1.0f - e) / (1.0f + e);
    big = x < 0.0f ? -big : big;
    big = a < 0.625f ? small : big;
    return x == 0.0f ? x : big; /* keeps the sign of -0 */
}

static inline double rs_exp(double x) { return exp(x); }

static inline double rs_sigmoid(double x) {
    double e = exp(-fabs(x));
    double s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : (x != x ? x : e * s);
}

static inline double rs_tanh(double x) { return tanh(x); }

/* Kernels are written once over REAL and instantiated for float (suffix _f32) and double (_f64):
 * a kernel file defines its body in a macro of (REAL, SUFFIX, EXP, SIGMOID, TANH). */
#define RS_CAT_(a, b) a##b
#define RS_CAT(a, b) RS_CAT_(a, b)

#endif
