/* eca.h: ECA (Efficient Channel Attention, Wang et al. 2020) forward and backward in plain
 * C99, in double, for one contiguous input. A teaching example: every loop of eca.c is one
 * line of the math (docs/math.md in npeca):
 *
 *   m[n,c]   = (1/S) sum_s x[n,c,s]                    global average pool
 *   z[n,c]   = bias + sum_j w[c,j] m~[n, c + j - p]    1-D cross-correlation over channels
 *   a[n,c]   = gate(z[n,c])                            sigmoid or hard sigmoid
 *   y[n,c,s] = a[n,c] x[n,c,s]                         rescale
 *
 * with p = (k - 1) / 2 and m~ the means extended past the edges of each channel group by
 * zeros or periodically. The backward takes g = dL/dy and returns dL/dx, dL/dw, dL/dbias.
 */
#ifndef ECA_H
#define ECA_H

typedef enum {
    ECA_PAD_ZEROS,   /* m~ is 0 outside the group */
    ECA_PAD_CIRCULAR /* m~ wraps around inside the group, as many times as k needs */
} eca_padding;

typedef enum {
    ECA_GATE_SIGMOID,     /* 1 / (1 + exp(-z)) */
    ECA_GATE_HARD_SIGMOID /* relu6(z + 3) / 6 = min(max(z + 3, 0), 6) / 6 */
} eca_gate;

typedef struct {
    int n;             /* batch size N */
    int c;             /* channels C */
    int s;             /* spatial positions S (all spatial axes flattened) */
    int channels_last; /* 0: x is (N, C, S); 1: x is (N, S, C) */
    int k;             /* kernel size, odd */
    eca_padding padding;
    int groups;        /* G: C / G contiguous channels per group; the window stays inside */
    eca_gate gate;
    int per_channel;   /* 0: one kernel w[k] for all channels; 1: w[C][k], row c for channel c */
    int has_bias;      /* 1: z gets a scalar bias */
} eca_params;

/* Forward. x: N*C*S values in p's layout; w: k values (or C*k when per_channel); bias: one
 * value, or NULL when !has_bias. Writes y (like x) and m, z, a (N*C each, as (N, C)). */
void eca_forward(const eca_params *p, const double *x, const double *w, const double *bias,
                 double *y, double *m, double *z, double *a);

/* Backward, given the forward's m, z, a and the upstream gradient g (like x). Writes
 * dx (like x), dw (like w) and, when has_bias, dbias[0] (dbias may be NULL otherwise).
 * Returns 0, or -1 when its N*C scratch arrays cannot be allocated. */
int eca_backward(const eca_params *p, const double *x, const double *w, const double *g,
                 const double *m, const double *z, const double *a,
                 double *dx, double *dw, double *dbias);

#endif /* ECA_H */
