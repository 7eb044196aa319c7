/* dithub's CPU merge kernels: one pass over N float32 inputs per merged tensor.
 *
 * Each function is the plain torch expression of the kernel of the same name in
 * dithub/algorithms/merge/full_space.py (or kernels/select.py), entry by entry, with the same
 * float operations in the same order; built without FMA contraction (-ffp-contract=off),
 * so results are the plain path's bit for bit (tested); -fno-trapping-math only lets it
 * vectorize selects after comparisons (FP exception flags are not observed). Inputs are arrays of pointers to
 * n floats; `nt` is the number of OpenMP threads (torch's intra-op count). Work goes in
 * blocks of BLOCK entries: for each block, input by input, loops over contiguous
 * entries that the compiler vectorizes; a block's inputs stay in cache between the
 * passes of the sign election.
 */
#include <math.h>
#include <stdint.h>

#define BLOCK 1024

#define BLOCKS                                                              \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")            \
    for (int64_t b = 0; b < n; b += BLOCK)

/* BLOCKS, also summing the sign election's counts (see SIGN_MEAN) over the threads. */
#define BLOCKS_ELECTING                                                                          \
    int64_t pos = 0, neg = 0, zsum = 0;                                                          \
    _Pragma("omp parallel for schedule(static) num_threads(nt) reduction(+ : pos, neg, zsum)")   \
    for (int64_t b = 0; b < n; b += BLOCK)

#define ELECTED stats[0] = pos; stats[1] = neg; stats[2] = zsum

#define SPAN const int64_t m = n - b < BLOCK ? n - b : BLOCK

/* total[j] = VALUE(j) of input 0 + … + of input N-1, added in that order; input i's value
 * VALUE(j) at entry b + j is read after SETUP(i) (which hoists its pointers). */
#define RUNNING_SUM(SETUP, VALUE)                                           \
    float total[BLOCK];                                                     \
    {                                                                       \
        SETUP(0);                                                           \
        for (int64_t j = 0; j < m; j++) total[j] = VALUE(j);                \
    }                                                                       \
    for (int i = 1; i < N; i++) {                                           \
        SETUP(i);                                                           \
        for (int64_t j = 0; j < m; j++) total[j] = total[j] + VALUE(j);     \
    }

/* TIES' sign election (sign of the sum; a zero sum takes + if zs, else −) and disjoint mean,
 * times lam: `_sign_mean`. Counts the sums > 0 (pos), < 0 (neg), and = 0 with an agreeing entry
 * (zsum: where the zero-sum rule decided a nonzero result), inside a BLOCKS_ELECTING loop. */
#define SIGN_MEAN(SETUP, VALUE)                                             \
    RUNNING_SUM(SETUP, VALUE)                                               \
    float num[BLOCK], count[BLOCK];                                         \
    for (int64_t j = 0; j < m; j++) num[j] = count[j] = 0.0f;               \
    for (int i = 0; i < N; i++) {                                           \
        SETUP(i);                                                           \
        for (int64_t j = 0; j < m; j++) {                                   \
            const float v = VALUE(j);                                       \
            const int up = (total[j] > 0.0f) | ((total[j] == 0.0f) & zs);   \
            const int agree = (up ? v : -v) > 0.0f;                         \
            num[j] = num[j] + (agree ? v : 0.0f);                           \
            count[j] = count[j] + (agree ? 1.0f : 0.0f);                    \
        }                                                                   \
    }                                                                       \
    for (int64_t j = 0; j < m; j++) {                                       \
        out[b + j] = num[j] / (count[j] > 1.0f ? count[j] : 1.0f) * lam;    \
        pos += total[j] > 0.0f;                                             \
        neg += total[j] < 0.0f;                                             \
        zsum += (total[j] == 0.0f) & (count[j] > 0.0f);                     \
    }

#define TIES_SETUP(i) const float *restrict x = xs[i] + b; const float t = th[i]
#define TIES_KEPT(j) (fabsf(x[j]) >= t ? x[j] : 0.0f)

void ties(const float **xs, int N, int64_t n, const float *th, float lam, int zs, float *restrict out, int64_t *stats,
          int nt) {
    BLOCKS_ELECTING {
        SPAN;
        SIGN_MEAN(TIES_SETUP, TIES_KEPT)
    }
    ELECTED;
}

#define DARE_SETUP(i) const float *restrict x = xs[i] + b; const __typeof__(**ds) *restrict d = ds[i] + b
#define DARE_KEPT(j) (d[j] <= limit ? x[j] / keep : 0.0f)

#define DARE_KERNELS(SUFFIX, DRAW)                                                                      \
    void dare_ta_##SUFFIX(const float **xs, const DRAW **ds, int N, int64_t n, DRAW limit, float keep,  \
                          float lam, float *restrict out, int nt) {                                     \
        BLOCKS {                                                                                        \
            SPAN;                                                                                       \
            RUNNING_SUM(DARE_SETUP, DARE_KEPT)                                                          \
            for (int64_t j = 0; j < m; j++) out[b + j] = total[j] * lam;                                \
        }                                                                                               \
    }                                                                                                   \
    void dare_ties_##SUFFIX(const float **xs, const DRAW **ds, int N, int64_t n, DRAW limit, float keep, \
                            float lam, int zs, float *restrict out, int64_t *stats, int nt) {           \
        BLOCKS_ELECTING {                                                                               \
            SPAN;                                                                                       \
            SIGN_MEAN(DARE_SETUP, DARE_KEPT)                                                            \
        }                                                                                               \
        ELECTED;                                                                                        \
    }

DARE_KERNELS(i16, int16_t)
DARE_KERNELS(u8, uint8_t)

void band(const float **xs, int N, int64_t n, const float *lows, const float *highs, float alpha, float *restrict out, int nt) {
    BLOCKS {
        SPAN;
        float total[BLOCK];
        for (int64_t j = 0; j < m; j++) total[j] = 0.0f;
        for (int i = 0; i < N; i++) {
            const float *x = xs[i] + b, lo = lows[i], hi = highs[i];
            for (int64_t j = 0; j < m; j++) {
                float a = fabsf(x[j]);
                total[j] = total[j] + ((a >= lo) & (a < hi) ? x[j] : 0.0f);
            }
        }
        for (int64_t j = 0; j < m; j++) out[b + j] = total[j] * alpha;
    }
}

/* Per entry the input of largest magnitude: on a tie the later input if `later`, else the first. */
void magmax(const float **xs, int N, int64_t n, float alpha, int later, float *out, int nt) {
    BLOCKS {
        SPAN;
        float best[BLOCK];
        for (int64_t j = 0; j < m; j++) best[j] = xs[0][b + j];
        for (int i = 1; i < N; i++) {
            const float *x = xs[i] + b;
            if (later)
                for (int64_t j = 0; j < m; j++) best[j] = fabsf(x[j]) >= fabsf(best[j]) ? x[j] : best[j];
            else
                for (int64_t j = 0; j < m; j++) best[j] = fabsf(x[j]) > fabsf(best[j]) ? x[j] : best[j];
        }
        for (int64_t j = 0; j < m; j++) out[b + j] = best[j] * alpha;
    }
}

/* #(|x| >= values[p]) for the four probes, added to counts (a reduction: writes nothing per entry). */
void count_at_least(const float *x, int64_t n, const float *values, int64_t *counts, int nt) {
    int64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    const float v0 = values[0], v1 = values[1], v2 = values[2], v3 = values[3];
#pragma omp parallel for schedule(static) num_threads(nt) reduction(+ : c0, c1, c2, c3)
    for (int64_t b = 0; b < n; b += BLOCK) {
        const int64_t m = n - b < BLOCK ? n - b : BLOCK;
        int32_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (int64_t j = 0; j < m; j++) {
            float a = fabsf(x[b + j]);
            d0 += a >= v0;
            d1 += a >= v1;
            d2 += a >= v2;
            d3 += a >= v3;
        }
        c0 += d0;
        c1 += d1;
        c2 += d2;
        c3 += d3;
    }
    counts[0] += c0;
    counts[1] += c1;
    counts[2] += c2;
    counts[3] += c3;
}

/* The k-th largest |x| of each of `rows` rows of n floats (1 <= k <= n), exactly: a radix select on
 * the bits of |x| (sign cleared, they order like the magnitudes; NaNs rank above +inf, as
 * torch.sort puts them), 11 + 10 + 10 bits, each pass counting the entries that match the digits
 * found so far. Rows are independent (one thread each); histograms are small enough to clear. */
void kth_largest_abs_rows(const float *x, int64_t rows, int64_t n, int64_t k, float *out, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        const uint32_t *bits = (const uint32_t *)(x + r * n);
        uint32_t prefix = 0, mask = 0;
        int64_t rank = k; /* the rank still to find among entries matching prefix under mask */
        static const int widths[3] = {11, 10, 10};
        int shift = 31;
        for (int pass = 0; pass < 3; pass++) {
            const int width = widths[pass];
            shift -= width;
            int64_t hist[2048] = {0};
            for (int64_t j = 0; j < n; j++) {
                const uint32_t b = bits[j] & 0x7FFFFFFFu;
                if ((b & mask) == prefix) hist[(b >> shift) & ((1u << width) - 1)]++;
            }
            int64_t digit = (1 << width) - 1;
            while (hist[digit] < rank) rank -= hist[digit--];
            prefix |= (uint32_t)digit << shift;
            mask |= ((1u << width) - 1) << shift;
        }
        union { uint32_t u; float f; } v = {prefix};
        out[r] = v.f;
    }
}

/* DARE's 16-bit draws from Philox4x32-10 (kernels/philox.py, as triton.language.philox): entry e of
 * input `row` has counter (e mod 2^32, e div 2^32, row, 0) and key (seed's low word, high word); the
 * draw is the top half of the first output word, shifted to signed. */
void philox_i16(uint64_t seed, int64_t start, int64_t n, uint32_t row, int16_t *restrict out, int nt) {
    BLOCKS {
        SPAN;
        for (int64_t j = 0; j < m; j++) {
            const uint64_t e = (uint64_t)(start + b + j);
            uint32_t c0 = (uint32_t)e, c1 = (uint32_t)(e >> 32), c2 = row, c3 = 0;
            uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
            for (int r = 0; r < 10; r++) {
                const uint64_t p0 = (uint64_t)c0 * 0xD2511F53u, p2 = (uint64_t)c2 * 0xCD9E8D57u;
                const uint32_t n0 = (uint32_t)(p2 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
                c1 = (uint32_t)p2;
                c3 = (uint32_t)p0;
                c0 = n0;
                c2 = n2;
                k0 += 0x9E3779B9u;
                k1 += 0xBB67AE85u;
            }
            out[b + j] = (int16_t)((int32_t)(c0 >> 16) - 32768);
        }
    }
}
