/*
 * The body of one 8-lane SHA-256 kernel, included twice by _sha256mb.c with
 * different KERNEL_NAME, KERNEL_TARGET and primitive macros (ROR, XOR3, CH,
 * MAJ): once for plain AVX2, once for AVX-512VL on 256-bit registers (one
 * instruction per rotation and per boolean function instead of three).
 * It undefines those macros at its end, so the next variant defines its own.
 */

KERNEL_TARGET static void
KERNEL_NAME(struct sha256mb_lane *const *lanes, int n, uint64_t maxBlocks, int stopWhenDry)
{
    /* Per lane: where the next block is, how many are left in the current
     * segment, and how many this call may still take. */
    const uint8_t *ptr[8];
    uint64_t left[8];
    uint64_t budget[8];
    const uint8_t *blocks[8];
    uint32_t mask[8] __attribute__((aligned(32)));
    uint32_t tmp[8][8] __attribute__((aligned(32)));
    __m256i A, B, C, D, E, F, G, H;
    int i, t;

    memset(tmp, 0, sizeof(tmp));
    for (i = 0; i < 8; i++) {
        ptr[i] = sha256mbZeroBlock;
        left[i] = 0;
        budget[i] = 0;
        if (i < n) {
            struct sha256mb_lane *lane = lanes[i];
            laneSkipEmpty(lane);
            if (lane->index < lane->count) {
                ptr[i] = lane->segments[lane->index].data + lane->segments[lane->index].skip
                    + 64 * lane->offset;
                left[i] = lane->segments[lane->index].blocks - lane->offset;
                budget[i] = maxBlocks;
            }
            for (t = 0; t < 8; t++)
                tmp[t][i] = lane->state[t];
        }
    }
    A = _mm256_load_si256((const __m256i *)tmp[0]);
    B = _mm256_load_si256((const __m256i *)tmp[1]);
    C = _mm256_load_si256((const __m256i *)tmp[2]);
    D = _mm256_load_si256((const __m256i *)tmp[3]);
    E = _mm256_load_si256((const __m256i *)tmp[4]);
    F = _mm256_load_si256((const __m256i *)tmp[5]);
    G = _mm256_load_si256((const __m256i *)tmp[6]);
    H = _mm256_load_si256((const __m256i *)tmp[7]);

    for (;;) {
        int active = 0;
        __m256i a, b, c, d, e, f, g, h, m;
        __m256i w[16];

        for (i = 0; i < 8; i++) {
            const uint8_t *p = sha256mbZeroBlock;
            mask[i] = 0;
            if (budget[i] && left[i] == 0 && i < n) {
                /* The current segment is done: move to the next one. */
                struct sha256mb_lane *lane = lanes[i];
                lane->index++;
                lane->offset = 0;
                laneSkipEmpty(lane);
                if (lane->index < lane->count) {
                    ptr[i] = lane->segments[lane->index].data + lane->segments[lane->index].skip;
                    left[i] = lane->segments[lane->index].blocks;
                } else {
                    budget[i] = 0;
                }
            }
            if (budget[i] && left[i]) {
                p = ptr[i];
                ptr[i] += 64;
                left[i]--;
                budget[i]--;
                lanes[i]->offset++;
                mask[i] = 0xffffffffu;
                active++;
            }
            blocks[i] = p;
        }
        if (!active)
            break;

        a = A; b = B; c = C; d = D; e = E; f = F; g = G; h = H;
        loadTransposed(w, blocks);

#define S0(x) XOR3(ROR(x, 2), ROR(x, 13), ROR(x, 22))
#define S1(x) XOR3(ROR(x, 6), ROR(x, 11), ROR(x, 25))
#define s0(x) XOR3(ROR(x, 7), ROR(x, 18), _mm256_srli_epi32(x, 3))
#define s1(x) XOR3(ROR(x, 17), ROR(x, 19), _mm256_srli_epi32(x, 10))
#define ROUND(a, b, c, d, e, f, g, h, k, wt)                                        \
        do {                                                                        \
            __m256i t1 = _mm256_add_epi32(                                          \
                _mm256_add_epi32(h, S1(e)),                                         \
                _mm256_add_epi32(CH(e, f, g),                                       \
                                 _mm256_add_epi32(_mm256_set1_epi32(k), wt)));      \
            __m256i t2 = _mm256_add_epi32(S0(a), MAJ(a, b, c));                     \
            d = _mm256_add_epi32(d, t1);                                            \
            h = _mm256_add_epi32(t1, t2);                                           \
        } while (0)
#define EXPAND(t)                                                                   \
        (w[(t) & 15] = _mm256_add_epi32(                                            \
             _mm256_add_epi32(w[(t) & 15], s0(w[((t) + 1) & 15])),                  \
             _mm256_add_epi32(w[((t) + 9) & 15], s1(w[((t) + 14) & 15]))))
#define EIGHT(base, W)                                                              \
        ROUND(a, b, c, d, e, f, g, h, sha256mbK[(base) + 0], W((base) + 0));        \
        ROUND(h, a, b, c, d, e, f, g, sha256mbK[(base) + 1], W((base) + 1));        \
        ROUND(g, h, a, b, c, d, e, f, sha256mbK[(base) + 2], W((base) + 2));        \
        ROUND(f, g, h, a, b, c, d, e, sha256mbK[(base) + 3], W((base) + 3));        \
        ROUND(e, f, g, h, a, b, c, d, sha256mbK[(base) + 4], W((base) + 4));        \
        ROUND(d, e, f, g, h, a, b, c, sha256mbK[(base) + 5], W((base) + 5));        \
        ROUND(c, d, e, f, g, h, a, b, sha256mbK[(base) + 6], W((base) + 6));        \
        ROUND(b, c, d, e, f, g, h, a, sha256mbK[(base) + 7], W((base) + 7))
#define LOADED(t) w[(t) & 15]
        EIGHT(0, LOADED);
        EIGHT(8, LOADED);
        EIGHT(16, EXPAND);
        EIGHT(24, EXPAND);
        EIGHT(32, EXPAND);
        EIGHT(40, EXPAND);
        EIGHT(48, EXPAND);
        EIGHT(56, EXPAND);
#undef S0
#undef S1
#undef s0
#undef s1
#undef ROUND
#undef EXPAND
#undef EIGHT
#undef LOADED

        /* Lanes that had no block add nothing: their state stays as it was. */
        m = _mm256_load_si256((const __m256i *)mask);
        A = _mm256_add_epi32(A, _mm256_and_si256(a, m));
        B = _mm256_add_epi32(B, _mm256_and_si256(b, m));
        C = _mm256_add_epi32(C, _mm256_and_si256(c, m));
        D = _mm256_add_epi32(D, _mm256_and_si256(d, m));
        E = _mm256_add_epi32(E, _mm256_and_si256(e, m));
        F = _mm256_add_epi32(F, _mm256_and_si256(f, m));
        G = _mm256_add_epi32(G, _mm256_and_si256(g, m));
        H = _mm256_add_epi32(H, _mm256_and_si256(h, m));

        /* A lane that just hashed the last block of its last segment would
         * idle through the rest of the call: return, so the caller can give
         * it new work while the other lanes carry on. */
        if (stopWhenDry) {
            for (i = 0; i < n; i++)
                if (mask[i] && left[i] == 0 && laneIsLast(lanes[i]))
                    goto done;
        }
    }
done:

    _mm256_store_si256((__m256i *)tmp[0], A);
    _mm256_store_si256((__m256i *)tmp[1], B);
    _mm256_store_si256((__m256i *)tmp[2], C);
    _mm256_store_si256((__m256i *)tmp[3], D);
    _mm256_store_si256((__m256i *)tmp[4], E);
    _mm256_store_si256((__m256i *)tmp[5], F);
    _mm256_store_si256((__m256i *)tmp[6], G);
    _mm256_store_si256((__m256i *)tmp[7], H);
    for (i = 0; i < n; i++) {
        struct sha256mb_lane *lane = lanes[i];
        for (t = 0; t < 8; t++)
            lane->state[t] = tmp[t][i];
        if (left[i] == 0)
            laneSkipEmpty(lane);
    }
}

#undef KERNEL_NAME
#undef KERNEL_TARGET
#undef ROR
#undef XOR3
#undef CH
#undef MAJ
