/* Few-row products against a weight stored as panels (engine/panel_head.py).
 *
 * The weight W [V, K] is stored as V/16 panels; panel p holds rows 16p..16p+15 as K
 * consecutive groups of 16 (element (v, k) at p*16*K + k*16 + v%16). For each panel and
 * each activation row the 16 outputs are one vector accumulator: out[m, v] is summed
 * over k in order with fused multiply-adds, the same operations whatever M is and
 * whichever thread runs it, so a row's logits do not depend on its batch.
 *
 * Built at run time with -march=native (GCC vector extensions: AVX-512, AVX2 or NEON
 * as the machine has); see engine/native.py.
 */
typedef float v16 __attribute__((vector_size(64), aligned(4)));

static inline v16 load16(const float *p) { v16 r; __builtin_memcpy(&r, p, sizeof r); return r; }
static inline void store16(float *p, v16 a) { __builtin_memcpy(p, &a, sizeof a); }

/* Two panels at a time (the weight vectors are loaded once per k for MB rows), then one. */
#define PANELS(MB)                                                                    \
    for (; p + 2 <= p1; p += 2) {                                                     \
        const float *a = w + p * 16 * K, *b = a + 16 * K;                             \
        v16 s0[MB], s1[MB];                                                           \
        for (int m = 0; m < MB; m++) s0[m] = s1[m] = (v16){0};                        \
        for (long k = 0; k < K; k++) {                                                \
            v16 wa = load16(a + 16 * k), wb = load16(b + 16 * k);                     \
            for (int m = 0; m < MB; m++) {                                            \
                float xv = x[m * K + k];                                              \
                s0[m] += xv * wa;                                                     \
                s1[m] += xv * wb;                                                     \
            }                                                                         \
        }                                                                             \
        for (int m = 0; m < MB; m++) {                                                \
            store16(out + m * ldo + p * 16, s0[m]);                                   \
            store16(out + m * ldo + p * 16 + 16, s1[m]);                              \
        }                                                                             \
    }                                                                                 \
    for (; p < p1; p++) {                                                             \
        const float *a = w + p * 16 * K;                                              \
        v16 s0[MB];                                                                   \
        for (int m = 0; m < MB; m++) s0[m] = (v16){0};                                \
        for (long k = 0; k < K; k++) {                                                \
            v16 wa = load16(a + 16 * k);                                              \
            for (int m = 0; m < MB; m++) s0[m] += x[m * K + k] * wa;                  \
        }                                                                             \
        for (int m = 0; m < MB; m++) store16(out + m * ldo + p * 16, s0[m]);          \
    }

static void rows(const float *x, int mb, const float *w, long K, long p0, long p1,
                 float *out, long ldo) {
    long p = p0;
    switch (mb) {
    case 8: PANELS(8) break;
    case 7: PANELS(7) break;
    case 6: PANELS(6) break;
    case 5: PANELS(5) break;
    case 4: PANELS(4) break;
    case 3: PANELS(3) break;
    case 2: PANELS(2) break;
    default: PANELS(1) break;
    }
}

/* out[m * ldo + v] = sum_k x[m * K + k] * W[v, k] for m < M and panels p0 <= p < p1. */
void panel_matmul(const float *x, long M, const float *w, long K, long p0, long p1,
                  float *out, long ldo) {
    for (long m0 = 0; m0 < M; m0 += 8) {
        int mb = M - m0 < 8 ? (int)(M - m0) : 8;
        rows(x + m0 * K, mb, w, K, p0, p1, out + m0 * ldo, ldo);
    }
}
