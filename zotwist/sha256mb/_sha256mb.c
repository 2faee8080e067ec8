/*
 * Multi-buffer SHA-256: up to 8 independent streams hashed together, one per
 * 32-bit lane of the AVX2 registers (the state is transposed: a..h each hold
 * one word of 8 streams).  One stream of SHA-256 cannot be parallelised, but
 * several can, and a registry receives several blobs at once.
 *
 * A plain C ABI, loaded with ctypes (which releases the GIL for the call), so
 * no Python headers are needed.  Each lane hashes a list of segments (a
 * buffer, a byte offset and a number of whole 64-byte blocks) in order and records how far
 * it got, so a caller can give every lane an equal share per call and fill
 * lanes that ran dry with other streams.  Padding and partial blocks are the
 * caller's business (zotwist/sha256mb/stream.py).
 */

#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

struct sha256mb_segment {
    const uint8_t *data;        /* a buffer (no alignment required) */
    uint64_t skip;              /* where its blocks start in it, in bytes */
    uint64_t blocks;            /* whole 64-byte blocks from there */
};

struct sha256mb_lane {
    uint32_t *state;            /* 8 words, updated in place */
    const struct sha256mb_segment *segments;
    uint32_t count;             /* segments in the list */
    uint32_t index;             /* cursor: the segment being hashed */
    uint64_t offset;            /* cursor: blocks of it already hashed */
};

static const uint32_t sha256mbK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* What idle lanes hash; their result is thrown away. */
static const uint8_t sha256mbZeroBlock[64];

static inline void
laneSkipEmpty(struct sha256mb_lane *lane)
{
    while (lane->index < lane->count && lane->offset >= lane->segments[lane->index].blocks) {
        lane->index++;
        lane->offset = 0;
    }
}

/*
 * Whether the lane's current segment is its last one with blocks in it.
 */
static inline int
laneIsLast(const struct sha256mb_lane *lane)
{
    uint32_t j;

    for (j = lane->index + 1; j < lane->count; j++)
        if (lane->segments[j].blocks)
            return 0;
    return 1;
}

/*
 * The message words of 8 blocks, transposed: w[t] holds word t of each
 * lane's block, big-endian words made native.
 */
__attribute__((target("avx2"), always_inline)) static inline void
loadTransposed8(__m256i *out, const uint8_t *const *blocks, int half)
{
    const __m256i swap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    __m256i r[8], t[8], u[8];
    int i;

    for (i = 0; i < 8; i++)
        r[i] = _mm256_shuffle_epi8(
            _mm256_loadu_si256((const __m256i *)(blocks[i] + 32 * half)), swap);
    for (i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (i = 0; i < 4; i++) {
        out[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        out[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

__attribute__((target("avx2"), always_inline)) static inline void
loadTransposed(__m256i *w, const uint8_t *const *blocks)
{
    loadTransposed8(w, blocks, 0);
    loadTransposed8(w + 8, blocks, 1);
}

/* --- AVX2: rotations are two shifts and an or. --- */
#define KERNEL_NAME sha256mbAvx2
#define KERNEL_TARGET __attribute__((target("avx2")))
#define ROR(x, n) _mm256_or_si256(_mm256_srli_epi32(x, n), _mm256_slli_epi32(x, 32 - (n)))
#define XOR3(x, y, z) _mm256_xor_si256(_mm256_xor_si256(x, y), z)
#define CH(e, f, g) _mm256_xor_si256(_mm256_and_si256(_mm256_xor_si256(f, g), e), g)
#define MAJ(a, b, c) \
    _mm256_or_si256(_mm256_and_si256(a, b), _mm256_and_si256(c, _mm256_or_si256(a, b)))
#include "_sha256mb_kernel.h"

/* --- AVX-512VL on the same 256-bit registers: vprord and vpternlogd. --- */
#define KERNEL_NAME sha256mbAvx512
#define KERNEL_TARGET __attribute__((target("avx2,avx512f,avx512vl")))
#define ROR(x, n) _mm256_ror_epi32(x, n)
#define XOR3(x, y, z) _mm256_ternarylogic_epi32(x, y, z, 0x96)
#define CH(e, f, g) _mm256_ternarylogic_epi32(e, f, g, 0xca)
#define MAJ(a, b, c) _mm256_ternarylogic_epi32(a, b, c, 0xe8)
#include "_sha256mb_kernel.h"

#define SHA256MB_NONE 0
#define SHA256MB_AVX2 1
#define SHA256MB_AVX512 2

/*
 * The best kernel this CPU (and OS) runs: SHA256MB_AVX512, SHA256MB_AVX2,
 * or SHA256MB_NONE when neither works (the caller then uses hashlib).
 */
int
sha256mb_best(void)
{
    static int best = -1;

    if (best >= 0)
        return best;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx2"))
        best = SHA256MB_AVX512;
    else if (__builtin_cpu_supports("avx2"))
        best = SHA256MB_AVX2;
    else
        best = SHA256MB_NONE;
    return best;
}

/*
 * Whether the CPU has the SHA extensions (SHA-NI: CPUID leaf 7, EBX bit 29).
 * OpenSSL then hashes one stream faster than this kernel hashes eight, and
 * zotwist uses hashlib instead.
 */
int
sha256mb_cpu_has_sha(void)
{
    unsigned int a, b, c, d;

    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b >> 29) & 1;
}

/* Lanes per call. */
int
sha256mb_lanes(void)
{
    return 8;
}

/*
 * Hash up to 8 lanes together, each at most maxBlocks blocks (0: no limit),
 * advancing each lane's state and cursor.  With SHA256MB_STOP_WHEN_DRY in
 * flags, return as soon as one lane has hashed all its segments (a round
 * of a mill that refills lanes).  Returns 0, or -1 for a bad argument or a
 * kernel this CPU does not have.
 */
#define SHA256MB_STOP_WHEN_DRY 1

int
sha256mb_run(struct sha256mb_lane *const *lanes, int n, uint64_t maxBlocks, int kernel,
             int flags)
{
    int stopWhenDry = (flags & SHA256MB_STOP_WHEN_DRY) != 0;
    int best = sha256mb_best();

    if (n < 0 || n > 8 || kernel > best)
        return -1;
    if (maxBlocks == 0)
        maxBlocks = UINT64_MAX;
    switch (kernel) {
    case SHA256MB_AVX2:
        sha256mbAvx2(lanes, n, maxBlocks, stopWhenDry);
        return 0;
    case SHA256MB_AVX512:
        sha256mbAvx512(lanes, n, maxBlocks, stopWhenDry);
        return 0;
    default:
        return -1;
    }
}
