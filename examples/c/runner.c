/* runner.c: run eca.c on every case of an exported golden suite and judge the results.
 *
 *   runner [CASE...]     every case of the suite, or only the named ones
 *
 * For each case: widen the inputs to double, run eca_forward and eca_backward, round the
 * outputs y, dx, dweight, dbias to the case's dtype (float64 as is, float32 by a cast,
 * float16 by fp16_round, bfloat16 by bf16_round; m, z and a stay double, as the contract
 * allows a wider type for them), and compare every element with the suite's expected value and bound:
 *
 *   expected finite:   |actual - expected| <= bound
 *   expected NaN:      actual is NaN
 *   expected +-inf:    actual is the same infinity
 *   and, in nonfinite cases, actual NaN also passes where the output's nan_ok mask is 1.
 *
 * Prints `PASS name` or `FAIL name: output[i] got G expected E bound B ...` per case and a
 * summary line; exits 1 if any case failed or none ran, 2 on a usage or memory error.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eca.h"
#include "fp16.h"
#include "npeca_golden.h"

/* --- reading the case --------------------------------------------------------------- */

/* Value i of an array of the case's dtype, as double (exact). */
static double value(const npeca_golden_array *arr, size_t i)
{
    return arr->f != NULL ? (double)arr->f[i] : arr->d[i];
}

/* A double copy of an array (NULL for an absent one; *failed set when out of memory). */
static double *widen(const npeca_golden_array *arr, int *failed)
{
    double *out;
    if (arr->size == 0)
        return NULL;
    out = malloc(arr->size * sizeof *out);
    if (out == NULL) {
        *failed = 1;
        return NULL;
    }
    for (size_t i = 0; i < arr->size; i++)
        out[i] = value(arr, i);
    return out;
}

static eca_params params_of(const npeca_golden_case *cs)
{
    eca_params p;
    p.n = cs->n;
    p.c = cs->c;
    p.s = cs->s;
    p.channels_last = cs->channel_axis != 1;
    p.k = cs->k;
    p.padding = cs->padding == NPECA_GOLDEN_PAD_CIRCULAR ? ECA_PAD_CIRCULAR : ECA_PAD_ZEROS;
    p.groups = cs->groups;
    p.gate = cs->gate == NPECA_GOLDEN_GATE_HARD_SIGMOID ? ECA_GATE_HARD_SIGMOID
                                                        : ECA_GATE_SIGMOID;
    p.per_channel = cs->per_channel;
    p.has_bias = cs->has_bias;
    return p;
}

/* --- rounding to the case's dtype --------------------------------------------------- */

static double to_dtype(int dtype, double v)
{
    switch (dtype) {
    case NPECA_GOLDEN_FLOAT16:
        return fp16_round(v);
    case NPECA_GOLDEN_BFLOAT16:
        return bf16_round(v);
    case NPECA_GOLDEN_FLOAT32:
        return (double)(float)v;  /* the conversion rounds to nearest even */
    default:
        return v;
    }
}

static void round_all(int dtype, double *v, size_t size)
{
    for (size_t i = 0; i < size; i++)
        v[i] = to_dtype(dtype, v[i]);
}

/* --- judging ------------------------------------------------------------------------ */

/* One output: what eca.c computed, what the suite expects, its bound and NaN mask. */
typedef struct {
    const char *name;
    const double *actual;
    npeca_golden_array expected;
    const double *bound;
    const uint8_t *nan_ok; /* NULL: NaN only where NaN is expected */
} output;

/* The verdict contract of docs/golden.md for one element. */
static int element_ok(double actual, double expected, double bound, int nan_ok)
{
    if (isnan(expected))
        return isnan(actual);
    if (nan_ok && isnan(actual))
        return 1;
    if (isinf(expected))
        return actual == expected;
    return fabs(actual - expected) <= bound;
}

/* How far beyond its bound an element is (inf where not finite), to pick the worst. */
static double excess(double actual, double expected, double bound)
{
    double diff = fabs(actual - expected);
    if (!isfinite(diff))
        return INFINITY;
    return bound > 0 ? diff / bound : INFINITY;
}

typedef struct {
    size_t failed;  /* elements beyond their bound */
    size_t worst;   /* the index of the worst of them */
    double ratio;   /* its excess */
} verdict;

static verdict judge(const output *out)
{
    verdict v = {0, 0, -1.0};
    for (size_t i = 0; i < out->expected.size; i++) {
        double act = out->actual[i], exp = value(&out->expected, i);
        if (element_ok(act, exp, out->bound[i], out->nan_ok != NULL && out->nan_ok[i]))
            continue;
        v.failed++;
        if (excess(act, exp, out->bound[i]) > v.ratio) {
            v.ratio = excess(act, exp, out->bound[i]);
            v.worst = i;
        }
    }
    return v;
}

/* --- one case ----------------------------------------------------------------------- */

/* Runs and judges one case: 1 passed, 0 failed, -1 out of memory. */
static int run_case(const npeca_golden_case *cs)
{
    eca_params p = params_of(cs);
    size_t size_x = cs->x.size, nc = (size_t)cs->n * cs->c;
    int oom = 0, result = 1;
    double *x = widen(&cs->x, &oom), *w = widen(&cs->weight, &oom);
    double *bias = widen(&cs->bias, &oom), *g = widen(&cs->grad_out, &oom);
    double *y = malloc(size_x * sizeof *y), *dx = malloc(size_x * sizeof *dx);
    double *m = malloc(nc * sizeof *m), *z = malloc(nc * sizeof *z);
    double *a = malloc(nc * sizeof *a), *dw = malloc(cs->weight.size * sizeof *dw);
    double dbias[1] = {0.0};

    if (oom || !y || !dx || !m || !z || !a || !dw) {
        result = -1;
        goto done;
    }
    eca_forward(&p, x, w, bias, y, m, z, a);
    if (eca_backward(&p, x, w, g, m, z, a, dx, dw, cs->has_bias ? dbias : NULL) != 0) {
        result = -1;
        goto done;
    }
    round_all(cs->dtype, y, size_x);
    round_all(cs->dtype, dx, size_x);
    round_all(cs->dtype, dw, cs->weight.size);
    round_all(cs->dtype, dbias, 1);
    {
        const output outs[] = {
            {"y", y, cs->y, cs->bound_y, cs->nan_ok_y},
            {"m", m, {NULL, cs->m, nc}, cs->bound_m, cs->nan_ok_m},
            {"z", z, {NULL, cs->z, nc}, cs->bound_z, cs->nan_ok_z},
            {"a", a, {NULL, cs->a, nc}, cs->bound_a, cs->nan_ok_a},
            {"dx", dx, cs->dx, cs->bound_dx, cs->nan_ok_dx},
            {"dweight", dw, cs->dweight, cs->bound_dweight, cs->nan_ok_dweight},
            {"dbias", dbias, cs->dbias, cs->bound_dbias, cs->nan_ok_dbias},
        };
        const int count = cs->has_bias ? 7 : 6;
        int worst = -1, others = 0;
        verdict vw = {0, 0, -1.0};
        char also[128] = "";

        for (int o = 0; o < count; o++) {
            verdict v = judge(&outs[o]);
            if (v.failed == 0)
                continue;
            if (worst < 0 || v.ratio > vw.ratio) {
                worst = o;
                vw = v;
            }
        }
        for (int o = 0; o < count; o++)
            if (o != worst && judge(&outs[o]).failed > 0) {
                strcat(also, others++ ? ", " : "; also failing: ");
                strcat(also, outs[o].name);
            }
        if (worst < 0) {
            printf("PASS %s\n", cs->name);
        } else {
            const output *out = &outs[worst];
            printf("FAIL %s: %s[%zu] got %.17g expected %.17g bound %.3g "
                   "(%zu of %zu elements beyond their bound%s)\n",
                   cs->name, out->name, vw.worst, out->actual[vw.worst],
                   value(&out->expected, vw.worst), out->bound[vw.worst], vw.failed,
                   out->expected.size, also);
            result = 0;
        }
    }
done:
    free(x);
    free(w);
    free(bias);
    free(g);
    free(y);
    free(dx);
    free(m);
    free(z);
    free(a);
    free(dw);
    return result;
}

/* --- main --------------------------------------------------------------------------- */

static int selected(const char *name, int argc, char **argv)
{
    if (argc <= 1)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    size_t passed = 0, failed = 0;

    for (int i = 1; i < argc; i++) {
        int known = 0;
        for (size_t c = 0; c < npeca_golden_case_count; c++)
            known |= strcmp(argv[i], npeca_golden_cases[c]->name) == 0;
        if (!known) {
            fprintf(stderr, "runner: no case %s in suite %s\n", argv[i], NPECA_GOLDEN_SUITE);
            return 2;
        }
    }
    for (size_t c = 0; c < npeca_golden_case_count; c++) {
        const npeca_golden_case *cs = npeca_golden_cases[c];
        int r;
        if (!selected(cs->name, argc, argv))
            continue;
        r = run_case(cs);
        if (r < 0) {
            fprintf(stderr, "runner: out of memory in case %s\n", cs->name);
            return 2;
        }
        if (r)
            passed++;
        else
            failed++;
    }
    printf("%zu PASS, %zu FAIL of %zu cases (suite %s, digest %.16s...)\n", passed, failed,
           passed + failed, NPECA_GOLDEN_SUITE, NPECA_GOLDEN_DIGEST);
    if (passed + failed == 0) {
        printf("no case ran\n");
        return 1;
    }
    return failed ? 1 : 0;
}
