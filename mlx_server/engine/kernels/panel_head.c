/* Few-row products against a weight stored as panels (engine/panel_head.py).
 *
 * The weight W [V, K] is stored as V/16 panels; panel p holds rows 16p..16p+15 as K
 * consecutive groups of 16 (element (v, k) at p*16*K + k*16 + v%16). For each panel and
 * each activation row the 16 outputs are one vector accumulator: out[m, v] is summed
 * over k in order with fused multiply-adds, the same operations whatever M is and
 * whichever thread runs it, so a row's logits do not depend on its batch.
 *
 * Built at run time with -march=native (engine/native.py), in GCC vector extensions,
 * for AVX-512 only: 8 rows x 2 panels of 16-float accumulators fit its 32 registers.
 * Other targets fail the build on purpose and keep the server's BLAS path: measured on
 * this project's EPYC, 8 rows of Gemma 3's head took 26.6 ms here, 236 ms built for AVX2
 * (the 64-byte vectors split and spill) and 560 ms for baseline x86-64.
 */
#ifndef __AVX512F__
#error "panel kernel: built for AVX-512 only (other vector units unmeasured or slower)"
#endif
typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline v16 load16(const float *p) { v16 r; __builtin_memcpy(&r, p, sizeof r); return r; }
static inline void store16(float *p, v16 a) { __builtin_memcpy(p, &a, sizeof a); }

/* MB activation rows against panels p (and p + 1 when TWO): the weight vectors are
 * loaded once per k for all MB rows, and MB x 2 accumulators stay in registers. */
#define BLOCK(MB)                                                                     \
    static void block##MB(const float *x, const float *w, long K, long p, int two,    \
                          float *out, long ldo) {                                     \
        const float *a = w + p * 16 * K, *b = a + 16 * K;                            \
        v16 s0[MB], s1[MB];                                                           \
        for (int m = 0; m < MB; m++) s0[m] = s1[m] = (v16){0};                        \
        if (two) {                                                                    \
            for (long k = 0; k < K; k++) {                                            \
                v16 wa = load16(a + 16 * k), wb = load16(b + 16 * k);                 \
                for (int m = 0; m < MB; m++) {                                        \
                    float xv = x[m * K + k];                                          \
                    s0[m] += xv * wa;                                                 \
                    s1[m] += xv * wb;                                                 \
                }                                                                     \
            }                                                                         \
        } else {                                                                      \
            for (long k = 0; k < K; k++) {                                            \
                v16 wa = load16(a + 16 * k);                                          \
                for (int m = 0; m < MB; m++) s0[m] += x[m * K + k] * wa;              \
            }                                                                         \
        }                                                                             \
        for (int m = 0; m < MB; m++) {                                                \
            store16(out + m * ldo + p * 16, s0[m]);                                   \
            if (two) store16(out + m * ldo + p * 16 + 16, s1[m]);                     \
        }                                                                             \
    }
BLOCK(1) BLOCK(2) BLOCK(3) BLOCK(4) BLOCK(5) BLOCK(6) BLOCK(7) BLOCK(8)

typedef void (*block_fn)(const float *, const float *, long, long, int, float *, long);
static const block_fn BLOCKS[9] = {0, block1, block2, block3, block4, block5, block6,
                                   block7, block8};

/* Rows are taken CHUNK at a time so that, for many rows (a prompt), a chunk of
 * activations and a pair of panels both stay in cache while every 8-row block of the
 * chunk passes over the pair: the weight is read from memory once per chunk. */
#define CHUNK 64

/* out[m * ldo + v] = sum_k x[m * K + k] * W[v, k] for m < M and panels p0 <= p < p1. */
void panel_matmul(const float *x, long M, const float *w, long K, long p0, long p1,
                  float *out, long ldo) {
    for (long c = 0; c < M; c += CHUNK) {
        long ce = c + CHUNK < M ? c + CHUNK : M;
        for (long p = p0; p < p1; p += 2) {
            int two = p + 1 < p1;
            for (long m0 = c; m0 < ce; m0 += 8) {
                int mb = ce - m0 < 8 ? (int)(ce - m0) : 8;
                BLOCKS[mb](x + m0 * K, w, K, p, two, out + m0 * ldo, ldo);
            }
        }
    }
}
