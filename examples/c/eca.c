/* eca.c: ECA forward and backward in plain C99, computed in double. See eca.h for the
 * formulas and the parameters, and docs/math.md in npeca for their derivation. */
#include "eca.h"

#include <math.h>
#include <stdlib.h>

/* --- indexing ------------------------------------------------------------------------- */

/* The position of x[n, c, s] in memory: (N, C, S) or, channels last, (N, S, C). */
static size_t at(const eca_params *p, int n, int c, int s)
{
    if (p->channels_last)
        return ((size_t)n * p->s + s) * p->c + c;
    return ((size_t)n * p->c + c) * p->s + s;
}

/* t modulo len, in [0, len) also for negative t (C's % keeps the sign of t). */
static int wrap(int t, int len)
{
    int r = t % len;
    return r < 0 ? r + len : r;
}

/* Channel `local` of the group that starts at channel `first`, extended past the group's
 * edges: wrapped around the group (circular, any number of times), or -1 (zeros). */
static int in_group(const eca_params *p, int first, int local)
{
    int size = p->c / p->groups;
    if (p->padding == ECA_PAD_CIRCULAR)
        return first + wrap(local, size);
    if (local < 0 || local >= size)
        return -1;
    return first + local;
}

/* The channel that tap j of output channel c reads: c + j - pad inside c's group (pad =
 * (k - 1) / 2), or -1 where zero padding supplies a 0. */
static int tap_source(const eca_params *p, int c, int j)
{
    int size = p->c / p->groups, pad = (p->k - 1) / 2;
    int first = c - c % size;
    return in_group(p, first, c % size + j - pad);
}

/* The reverse: the output channel that reads channel c_in through tap j, c_in - j + pad
 * inside the group, or -1 where that channel does not exist (zero padding). */
static int tap_reader(const eca_params *p, int c_in, int j)
{
    int size = p->c / p->groups, pad = (p->k - 1) / 2;
    int first = c_in - c_in % size;
    return in_group(p, first, c_in % size - j + pad);
}

/* w[c, j]: channel c's own kernel, or the shared one. */
static double weight(const eca_params *p, const double *w, int c, int j)
{
    return p->per_channel ? w[(size_t)c * p->k + j] : w[j];
}

/* --- the gates ------------------------------------------------------------------------ */

/* 1 / (1 + exp(-z)), written so that exp never overflows and small results keep their
 * relative accuracy: e = exp(-|z|) is in (0, 1]. */
static double sigmoid(double z)
{
    double e = exp(-fabs(z));
    return z >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

/* relu6(z + 3) / 6. Comparisons, not fmin/fmax, so that a NaN logit stays NaN. */
static double hard_sigmoid(double z)
{
    double t = z + 3.0;
    if (t < 0.0)
        t = 0.0;
    else if (t > 6.0)
        t = 6.0;
    return t / 6.0;
}

/* a = gate(z) */
static double gate(const eca_params *p, double z)
{
    return p->gate == ECA_GATE_SIGMOID ? sigmoid(z) : hard_sigmoid(z);
}

/* gate'(z). Sigmoid: a (1 - a), with 1 - a taken as sigmoid(-z), accurate also where a
 * rounds to 1. Hard sigmoid: 1/6 strictly inside (-3, 3), 0 elsewhere (the kinks too,
 * as PyTorch). */
static double gate_slope(const eca_params *p, double z, double a)
{
    if (p->gate == ECA_GATE_SIGMOID)
        return a * sigmoid(-z);
    return (z > -3.0 && z < 3.0) ? 1.0 / 6.0 : 0.0;
}

/* --- forward -------------------------------------------------------------------------- */

/* m[n,c] = (1/S) sum_s x[n,c,s] */
static void pool(const eca_params *p, const double *x, double *m)
{
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            double sum = 0.0;
            for (int s = 0; s < p->s; s++)
                sum += x[at(p, n, c, s)];
            m[(size_t)n * p->c + c] = sum / p->s;
        }
}

/* z[n,c] = bias + sum_j w[c,j] m~[n, c + j - pad]   (taps on padding zeros are skipped) */
static void correlate(const eca_params *p, const double *m, const double *w,
                      const double *bias, double *z)
{
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            double sum = 0.0;
            for (int j = 0; j < p->k; j++) {
                int src = tap_source(p, c, j);
                if (src >= 0)
                    sum += weight(p, w, c, j) * m[(size_t)n * p->c + src];
            }
            if (p->has_bias)
                sum += bias[0];
            z[(size_t)n * p->c + c] = sum;
        }
}

/* a[n,c] = gate(z[n,c]);  y[n,c,s] = a[n,c] x[n,c,s] */
static void rescale(const eca_params *p, const double *x, const double *z, double *a,
                    double *y)
{
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            size_t nc = (size_t)n * p->c + c;
            a[nc] = gate(p, z[nc]);
            for (int s = 0; s < p->s; s++)
                y[at(p, n, c, s)] = a[nc] * x[at(p, n, c, s)];
        }
}

void eca_forward(const eca_params *p, const double *x, const double *w, const double *bias,
                 double *y, double *m, double *z, double *a)
{
    pool(p, x, m);
    correlate(p, m, w, bias, z);
    rescale(p, x, z, a, y);
}

/* --- backward ------------------------------------------------------------------------- */

/* da[n,c] = sum_s g[n,c,s] x[n,c,s];  dz[n,c] = da[n,c] gate'(z[n,c]) */
static void gate_grad(const eca_params *p, const double *x, const double *g,
                      const double *z, const double *a, double *dz)
{
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            size_t nc = (size_t)n * p->c + c;
            double da = 0.0;
            for (int s = 0; s < p->s; s++)
                da += g[at(p, n, c, s)] * x[at(p, n, c, s)];
            dz[nc] = da * gate_slope(p, z[nc], a[nc]);
        }
}

/* Shared kernel:      dw[j]   = sum_{n,c} dz[n,c] m~[n, c + j - pad]
 * Per-channel kernel: dw[c,j] = sum_n     dz[n,c] m~[n, c + j - pad] */
static void weight_grad(const eca_params *p, const double *m, const double *dz, double *dw)
{
    int rows = p->per_channel ? p->c : 1;
    for (int i = 0; i < rows * p->k; i++)
        dw[i] = 0.0;
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++)
            for (int j = 0; j < p->k; j++) {
                int src = tap_source(p, c, j);
                if (src >= 0) {
                    size_t row = p->per_channel ? (size_t)c * p->k : 0;
                    dw[row + j] += dz[(size_t)n * p->c + c] * m[(size_t)n * p->c + src];
                }
            }
}

/* dbias = sum_{n,c} dz[n,c] */
static double bias_grad(const eca_params *p, const double *dz)
{
    double sum = 0.0;
    for (size_t i = 0; i < (size_t)p->n * p->c; i++)
        sum += dz[i];
    return sum;
}

/* dm[n,c'] = sum_j w[c,j] dz[n,c] over the channels c = c' - j + pad that read c' through
 * tap j: the transposed correlation, the kernel read backwards with the same padding. */
static void pool_grad(const eca_params *p, const double *w, const double *dz, double *dm)
{
    for (int n = 0; n < p->n; n++)
        for (int ci = 0; ci < p->c; ci++) {
            double sum = 0.0;
            for (int j = 0; j < p->k; j++) {
                int c = tap_reader(p, ci, j);
                if (c >= 0)
                    sum += weight(p, w, c, j) * dz[(size_t)n * p->c + c];
            }
            dm[(size_t)n * p->c + ci] = sum;
        }
}

/* dx[n,c,s] = g[n,c,s] a[n,c] + dm[n,c] / S: the direct path through y = a x, and the path
 * through the mean, dm/dx = 1/S. */
static void input_grad(const eca_params *p, const double *g, const double *a,
                       const double *dm, double *dx)
{
    for (int n = 0; n < p->n; n++)
        for (int c = 0; c < p->c; c++) {
            size_t nc = (size_t)n * p->c + c;
            for (int s = 0; s < p->s; s++)
                dx[at(p, n, c, s)] = g[at(p, n, c, s)] * a[nc] + dm[nc] / p->s;
        }
}

int eca_backward(const eca_params *p, const double *x, const double *w, const double *g,
                 const double *m, const double *z, const double *a,
                 double *dx, double *dw, double *dbias)
{
    size_t nc = (size_t)p->n * p->c;
    double *dz = malloc(nc * sizeof *dz);
    double *dm = malloc(nc * sizeof *dm);
    if (dz == NULL || dm == NULL) {
        free(dz);
        free(dm);
        return -1;
    }
    gate_grad(p, x, g, z, a, dz);
    weight_grad(p, m, dz, dw);
    if (p->has_bias)
        dbias[0] = bias_grad(p, dz);
    pool_grad(p, w, dz, dm);
    input_grad(p, g, a, dm, dx);
    free(dz);
    free(dm);
    return 0;
}
