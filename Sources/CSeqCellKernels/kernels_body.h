/* The kernels, written once with clang vector extensions, compiled once per ISA by
 * kernels.c: SCK_ATTR is the target attribute, SCK_NAME(x) the per-ISA name, SCK_VW the
 * vector width in floats (8: baseline and AVX2, 16: AVX-512). The arithmetic is the same
 * operation sequence at every width, so results differ between ISAs only where FMA
 * contraction differs (the baseline has no FMA) and in the GEMM's summation order (the
 * AVX-512 micro-kernel tiles rows differently). */

#define VW SCK_VW
typedef float SCK_NAME(vf_t) __attribute__((vector_size(VW * 4)));
typedef int32_t SCK_NAME(vi_t) __attribute__((vector_size(VW * 4)));
#define vf SCK_NAME(vf_t)
#define vi SCK_NAME(vi_t)
/* Vectors per 16-float weight panel row of the packed GEMM, and the row tile. */
#define NV (16 / VW)
#define MRT (VW == 16 ? 8 : 6)

static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(ld)(const float *p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(st)(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(splat)(float x) {
#if VW == 16
    return (vf){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
#else
    return (vf){x, x, x, x, x, x, x, x};
#endif
}

/* Clamps that let NaN through (a NaN lane of x stays NaN), unlike fmin/fmax, which drop
   it: x > hi ? hi : x and x < lo ? lo : x are false for NaN (x86 minps/maxps order). */
static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(min_keep_nan)(vf x, float hi) {
    vf h = SCK_NAME(splat)(hi);
    vi over = x > h;
    return (vf)((over & (vi)h) | (~over & (vi)x));
}
static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(max_keep_nan)(vf x, float lo) {
    vf l = SCK_NAME(splat)(lo);
    vi under = x < l;
    return (vf)((under & (vi)l) | (~under & (vi)x));
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial (Cephes expf), 2^n through the
   exponent bits. Inputs are clamped to [-87.34, 89]: below, the result is the smallest
   normal float; from 88.38 up n = 128 gives +inf (the true overflow is at 88.72; only
   sigmoid uses this, where the difference is below 4e-39), so sigmoid(-inf) = 0 exactly.
   NaN stays NaN. */
static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(exp)(vf x) {
    x = SCK_NAME(min_keep_nan)(x, 89.0f);
    x = SCK_NAME(max_keep_nan)(x, -87.3365478515625f);
    const vf magic = SCK_NAME(splat)(12582912.0f); /* 1.5 * 2^23: round to nearest */
    vf t = x * 1.44269504088896341f + magic;
    vf n = t - magic;
    vi ni = (vi)t - (vi)magic;
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = SCK_NAME(splat)(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    vf y = p * (r * r) + r + 1.0f;
    vi bits = (ni + 127) << 23;
    return y * (vf)bits;
}

static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(sigmoid_v)(vf x) {
    return 1.0f / (1.0f + SCK_NAME(exp)(-x));
}

/* tanh: Eigen's rational approximation (odd degree 13 / even degree 6) on [-7.9, 7.9],
   clamped outside (where tanh rounds to ±1 within 3e-7), exactly ±1 from |x| = 9.02 (±inf
   included); x itself for |x| < 4e-4. NaN stays NaN (the clamp keeps it, the polynomial carries it). */
static inline __attribute__((always_inline)) SCK_ATTR vf SCK_NAME(tanh_v)(vf x) {
    const float c = 7.90531110763549805f;
    vf xc = SCK_NAME(min_keep_nan)(SCK_NAME(max_keep_nan)(x, -c), c);
    vf x2 = xc * xc;
    vf p = SCK_NAME(splat)(-2.76076847742355e-16f);
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * xc;
    vf q = SCK_NAME(splat)(1.19825839466702e-06f);
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    vf r = p / q;
    vf ax = __builtin_elementwise_abs(x);
    vi tiny = ax < 0.0004f;
    /* From |x| = 9.02 on, tanh(x) rounds to ±1 exactly (libm, PyTorch: tanh(inf) = 1); the
       approximation at the clamp is 1 - 2.4e-7 with FMA. */
    vi big = ax > 9.02f;
    vi one = ((vi)x & (vi)SCK_NAME(splat)(-0.0f)) | (vi)SCK_NAME(splat)(1.0f);
    return (vf)((tiny & (vi)x) | (big & one) | (~(tiny | big) & (vi)r));
}

/* Runs `body(off, count)` over [0, n) in vectors, the tail through a zero-padded copy. */
#define SCK_TAIL_LOAD(dst, src, off, cnt) do { float _b[VW] = {0}; for (int64_t _i = 0; _i < (cnt); _i++) _b[_i] = (src)[(off) + _i]; dst = SCK_NAME(ld)(_b); } while (0)
#define SCK_TAIL_STORE(dstp, off, cnt, v) do { float _b[VW]; SCK_NAME(st)(_b, v); for (int64_t _i = 0; _i < (cnt); _i++) (dstp)[(off) + _i] = _b[_i]; } while (0)

static SCK_ATTR void SCK_NAME(sigmoid)(float *x, int64_t n) {
    int64_t j = 0;
    for (; j + VW <= n; j += VW) SCK_NAME(st)(x + j, SCK_NAME(sigmoid_v)(SCK_NAME(ld)(x + j)));
    if (j < n) { vf v; SCK_TAIL_LOAD(v, x, j, n - j); SCK_TAIL_STORE(x, j, n - j, SCK_NAME(sigmoid_v)(v)); }
}

static SCK_ATTR void SCK_NAME(tanh)(float *x, int64_t n) {
    int64_t j = 0;
    for (; j + VW <= n; j += VW) SCK_NAME(st)(x + j, SCK_NAME(tanh_v)(SCK_NAME(ld)(x + j)));
    if (j < n) { vf v; SCK_TAIL_LOAD(v, x, j, n - j); SCK_TAIL_STORE(x, j, n - j, SCK_NAME(tanh_v)(v)); }
}

static SCK_ATTR void SCK_NAME(tanh_copy)(const float *pre, float *out, float *out2, int64_t n) {
    int64_t j = 0;
    for (; j + VW <= n; j += VW) {
        vf v = SCK_NAME(tanh_v)(SCK_NAME(ld)(pre + j));
        SCK_NAME(st)(out + j, v);
        if (out2) SCK_NAME(st)(out2 + j, v);
    }
    if (j < n) {
        vf v; SCK_TAIL_LOAD(v, pre, j, n - j);
        v = SCK_NAME(tanh_v)(v);
        SCK_TAIL_STORE(out, j, n - j, v);
        if (out2) SCK_TAIL_STORE(out2, j, n - j, v);
    }
}

static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(lstm_vec)(float *gates, int64_t H, int64_t j, int64_t cnt, const float *c_prev,
                                               float *c_next, float *h_out, float *h_out2, int32_t store) {
    float *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    vf i, f, g, o, cp;
    if (cnt == VW) {
        i = SCK_NAME(ld)(gi + j); f = SCK_NAME(ld)(gf + j); g = SCK_NAME(ld)(gg + j); o = SCK_NAME(ld)(go + j);
        cp = c_prev ? SCK_NAME(ld)(c_prev + j) : SCK_NAME(splat)(0);
    } else {
        SCK_TAIL_LOAD(i, gi, j, cnt); SCK_TAIL_LOAD(f, gf, j, cnt); SCK_TAIL_LOAD(g, gg, j, cnt); SCK_TAIL_LOAD(o, go, j, cnt);
        if (c_prev) SCK_TAIL_LOAD(cp, c_prev, j, cnt); else cp = SCK_NAME(splat)(0);
    }
    i = SCK_NAME(sigmoid_v)(i); f = SCK_NAME(sigmoid_v)(f); g = SCK_NAME(tanh_v)(g); o = SCK_NAME(sigmoid_v)(o);
    vf c = f * cp + i * g;
    vf h = o * SCK_NAME(tanh_v)(c);
    if (cnt == VW) {
        if (store) { SCK_NAME(st)(gi + j, i); SCK_NAME(st)(gf + j, f); SCK_NAME(st)(gg + j, g); SCK_NAME(st)(go + j, o); }
        SCK_NAME(st)(c_next + j, c); SCK_NAME(st)(h_out + j, h);
        if (h_out2) SCK_NAME(st)(h_out2 + j, h);
    } else {
        if (store) { SCK_TAIL_STORE(gi, j, cnt, i); SCK_TAIL_STORE(gf, j, cnt, f); SCK_TAIL_STORE(gg, j, cnt, g); SCK_TAIL_STORE(go, j, cnt, o); }
        SCK_TAIL_STORE(c_next, j, cnt, c); SCK_TAIL_STORE(h_out, j, cnt, h);
        if (h_out2) SCK_TAIL_STORE(h_out2, j, cnt, h);
    }
}

static SCK_ATTR void SCK_NAME(lstm_row)(float *gates, int64_t H, const float *c_prev, float *c_next, float *h_out,
                                        float *h_out2, int32_t store_acts) {
    int64_t j = 0;
    for (; j + VW <= H; j += VW) SCK_NAME(lstm_vec)(gates, H, j, VW, c_prev, c_next, h_out, h_out2, store_acts);
    if (j < H) SCK_NAME(lstm_vec)(gates, H, j, H - j, c_prev, c_next, h_out, h_out2, store_acts);
}

static SCK_ATTR void SCK_NAME(lstm_row_range)(float *gates, int64_t H, int64_t j0, int64_t j1, const float *c_prev,
                                              float *c_next, float *h_out, float *h_out2, int32_t store_acts) {
    int64_t j = j0;
    for (; j + VW <= j1; j += VW) SCK_NAME(lstm_vec)(gates, H, j, VW, c_prev, c_next, h_out, h_out2, store_acts);
    if (j < j1) SCK_NAME(lstm_vec)(gates, H, j, j1 - j, c_prev, c_next, h_out, h_out2, store_acts);
}

static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(lstm_bvec)(float *acts, int64_t H, int64_t j, int64_t cnt, const float *cc,
                                                const float *c_prev, float *dcp, const float *dmp) {
    float *di = acts, *df = acts + H, *dg = acts + 2 * H, *dout = acts + 3 * H;
    vf i, f, g, o, c, cp, dc, dm;
    if (cnt == VW) {
        i = SCK_NAME(ld)(di + j); f = SCK_NAME(ld)(df + j); g = SCK_NAME(ld)(dg + j); o = SCK_NAME(ld)(dout + j);
        c = SCK_NAME(ld)(cc + j); cp = c_prev ? SCK_NAME(ld)(c_prev + j) : SCK_NAME(splat)(0);
        dc = SCK_NAME(ld)(dcp + j); dm = SCK_NAME(ld)(dmp + j);
    } else {
        SCK_TAIL_LOAD(i, di, j, cnt); SCK_TAIL_LOAD(f, df, j, cnt); SCK_TAIL_LOAD(g, dg, j, cnt); SCK_TAIL_LOAD(o, dout, j, cnt);
        SCK_TAIL_LOAD(c, cc, j, cnt);
        if (c_prev) SCK_TAIL_LOAD(cp, c_prev, j, cnt); else cp = SCK_NAME(splat)(0);
        SCK_TAIL_LOAD(dc, dcp, j, cnt); SCK_TAIL_LOAD(dm, dmp, j, cnt);
    }
    vf tc = SCK_NAME(tanh_v)(c);
    vf dct = dc + dm * o * (1.0f - tc * tc);
    vf ndc = dct * f;
    vf ri = dct * g * i * (1.0f - i);
    vf rf = dct * cp * f * (1.0f - f);
    vf rg = dct * i * (1.0f - g * g);
    vf ro = dm * tc * o * (1.0f - o);
    if (cnt == VW) {
        SCK_NAME(st)(dcp + j, ndc); SCK_NAME(st)(di + j, ri); SCK_NAME(st)(df + j, rf); SCK_NAME(st)(dg + j, rg); SCK_NAME(st)(dout + j, ro);
    } else {
        SCK_TAIL_STORE(dcp, j, cnt, ndc); SCK_TAIL_STORE(di, j, cnt, ri); SCK_TAIL_STORE(df, j, cnt, rf);
        SCK_TAIL_STORE(dg, j, cnt, rg); SCK_TAIL_STORE(dout, j, cnt, ro);
    }
}

static SCK_ATTR void SCK_NAME(lstm_row_backward)(float *acts, int64_t H, const float *c, const float *c_prev, float *dc,
                                                 const float *dm) {
    int64_t j = 0;
    for (; j + VW <= H; j += VW) SCK_NAME(lstm_bvec)(acts, H, j, VW, c, c_prev, dc, dm);
    if (j < H) SCK_NAME(lstm_bvec)(acts, H, j, H - j, c, c_prev, dc, dm);
}

static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(gru_vec)(float *gx, const float *gh, const float *bhn, const float *h_prev,
                                              float *h_out, float *h_out2, int64_t H, int64_t j, int64_t cnt, int32_t store) {
    float *xr = gx, *xz = gx + H, *xn = gx + 2 * H;
    const float *hr = gh, *hz = gh + H, *hn = gh + 2 * H;
    vf a, b, c2, d, e, f, bn, hp;
    if (cnt == VW) {
        a = SCK_NAME(ld)(xr + j); b = SCK_NAME(ld)(hr + j); c2 = SCK_NAME(ld)(xz + j); d = SCK_NAME(ld)(hz + j);
        e = SCK_NAME(ld)(xn + j); f = SCK_NAME(ld)(hn + j); bn = SCK_NAME(ld)(bhn + j);
        hp = h_prev ? SCK_NAME(ld)(h_prev + j) : SCK_NAME(splat)(0);
    } else {
        SCK_TAIL_LOAD(a, xr, j, cnt); SCK_TAIL_LOAD(b, hr, j, cnt); SCK_TAIL_LOAD(c2, xz, j, cnt); SCK_TAIL_LOAD(d, hz, j, cnt);
        SCK_TAIL_LOAD(e, xn, j, cnt); SCK_TAIL_LOAD(f, hn, j, cnt); SCK_TAIL_LOAD(bn, bhn, j, cnt);
        if (h_prev) SCK_TAIL_LOAD(hp, h_prev, j, cnt); else hp = SCK_NAME(splat)(0);
    }
    vf r = SCK_NAME(sigmoid_v)(a + b);
    vf z = SCK_NAME(sigmoid_v)(c2 + d);
    vf n = SCK_NAME(tanh_v)(e + r * (f + bn));
    vf v = (1.0f - z) * n + z * hp;
    if (cnt == VW) {
        if (store) { SCK_NAME(st)(xr + j, r); SCK_NAME(st)(xz + j, z); SCK_NAME(st)(xn + j, n); }
        SCK_NAME(st)(h_out + j, v);
        if (h_out2) SCK_NAME(st)(h_out2 + j, v);
    } else {
        if (store) { SCK_TAIL_STORE(xr, j, cnt, r); SCK_TAIL_STORE(xz, j, cnt, z); SCK_TAIL_STORE(xn, j, cnt, n); }
        SCK_TAIL_STORE(h_out, j, cnt, v);
        if (h_out2) SCK_TAIL_STORE(h_out2, j, cnt, v);
    }
}

static SCK_ATTR void SCK_NAME(gru_row)(float *gx, const float *gh, const float *bhn, const float *h_prev, float *h_out,
                                       float *h_out2, int64_t H, int32_t store_acts) {
    int64_t j = 0;
    for (; j + VW <= H; j += VW) SCK_NAME(gru_vec)(gx, gh, bhn, h_prev, h_out, h_out2, H, j, VW, store_acts);
    if (j < H) SCK_NAME(gru_vec)(gx, gh, bhn, h_prev, h_out, h_out2, H, j, H - j, store_acts);
}

static SCK_ATTR void SCK_NAME(gru_row_range)(float *gx, const float *gh, const float *bhn, const float *h_prev,
                                             float *h_out, float *h_out2, int64_t H, int64_t j0, int64_t j1, int32_t store_acts) {
    int64_t j = j0;
    for (; j + VW <= j1; j += VW) SCK_NAME(gru_vec)(gx, gh, bhn, h_prev, h_out, h_out2, H, j, VW, store_acts);
    if (j < j1) SCK_NAME(gru_vec)(gx, gh, bhn, h_prev, h_out, h_out2, H, j, j1 - j, store_acts);
}

static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(gru_bvec)(float *acts, float *dgh, const float *bhn,
                                              const float *h_prev, const float *dh, const float *gy, float *acc,
                                              int64_t H, int64_t j, int64_t cnt) {
    vf r, z, n, hn, bn, hp, up, g;
    if (cnt == VW) {
        r = SCK_NAME(ld)(acts + j); z = SCK_NAME(ld)(acts + H + j); n = SCK_NAME(ld)(acts + 2 * H + j);
        hn = SCK_NAME(ld)(dgh + 2 * H + j); bn = SCK_NAME(ld)(bhn + j); hp = SCK_NAME(ld)(h_prev + j);
        up = SCK_NAME(ld)(dh + j);
        g = gy ? SCK_NAME(ld)(gy + j) : SCK_NAME(splat)(0);
    } else {
        SCK_TAIL_LOAD(r, acts, j, cnt); SCK_TAIL_LOAD(z, acts + H, j, cnt); SCK_TAIL_LOAD(n, acts + 2 * H, j, cnt);
        SCK_TAIL_LOAD(hn, dgh + 2 * H, j, cnt); SCK_TAIL_LOAD(bn, bhn, j, cnt); SCK_TAIL_LOAD(hp, h_prev, j, cnt);
        SCK_TAIL_LOAD(up, dh, j, cnt);
        if (gy) SCK_TAIL_LOAD(g, gy, j, cnt); else g = SCK_NAME(splat)(0);
    }
    up = up + g;
    vf a = up * z;
    vf dn = up * (1.0f - z) * (1.0f - n * n);
    vf dr = dn * (hn + bn) * r * (1.0f - r);
    vf dz = up * (hp - n) * z * (1.0f - z);
    vf dnr = dn * r;
    if (cnt == VW) {
        SCK_NAME(st)(acts + j, dr); SCK_NAME(st)(acts + H + j, dz); SCK_NAME(st)(acts + 2 * H + j, dn);
        SCK_NAME(st)(dgh + j, dr); SCK_NAME(st)(dgh + H + j, dz); SCK_NAME(st)(dgh + 2 * H + j, dnr);
        SCK_NAME(st)(acc + j, a);
    } else {
        SCK_TAIL_STORE(acts, j, cnt, dr); SCK_TAIL_STORE(acts + H, j, cnt, dz); SCK_TAIL_STORE(acts + 2 * H, j, cnt, dn);
        SCK_TAIL_STORE(dgh, j, cnt, dr); SCK_TAIL_STORE(dgh + H, j, cnt, dz); SCK_TAIL_STORE(dgh + 2 * H, j, cnt, dnr);
        SCK_TAIL_STORE(acc, j, cnt, a);
    }
}

static SCK_ATTR void SCK_NAME(gru_row_backward)(float *acts, float *dgh, const float *bhn, const float *h_prev,
                                                const float *dh, const float *gy, float *acc, int64_t H) {
    int64_t j = 0;
    for (; j + VW <= H; j += VW) SCK_NAME(gru_bvec)(acts, dgh, bhn, h_prev, dh, gy, acc, H, j, VW);
    if (j < H) SCK_NAME(gru_bvec)(acts, dgh, bhn, h_prev, dh, gy, acc, H, j, H - j);
}

/* Packed GEMM for the recurrent product. W is packed in blocks of 16 outputs; inside a
   block, for each k, the 16 weights W[blk*16 + 0..15, k] (64 contiguous bytes, a K x 16
   panel: 16 KB at K = 256, so it stays in L1 while every row tile uses it). Blocks
   outermost; with 8-float vectors rows six at a time (12 accumulators, 2 weight loads + 6
   broadcasts per 12 FMAs: FMA-bound), the rows left with the same kernel; with 16-float
   vectors two adjacent full blocks at a time in row tiles of at most 8 (mk32: 16 zmm
   accumulators, 2 weight loads + 8 broadcasts per 16 FMAs), a last odd or partial block
   in the same row tiles (mk16). One or two rows alone split k so 4·NV accumulators hide
   the FMA latency. Every output element sums its k terms in the same order at both widths
   (except that a 1- or 2-row remainder of the 8-float tiling splits k). Blocks
   [blk_begin, blk_end) only. */
#define NB 16
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(put16)(float *d, const vf *a, int64_t cnt,
                                                                         int32_t accumulate) {
    if (cnt == NB) {
        for (int v = 0; v < NV; v++) {
            vf t = a[v];
            if (accumulate) t += SCK_NAME(ld)(d + v * VW);
            SCK_NAME(st)(d + v * VW, t);
        }
        return;
    }
    float buf[NB];
    for (int v = 0; v < NV; v++) SCK_NAME(st)(buf + v * VW, a[v]);
    if (accumulate) { for (int64_t j = 0; j < cnt; j++) d[j] += buf[j]; }
    else { for (int64_t j = 0; j < cnt; j++) d[j] = buf[j]; }
}

/* MR rows x one 16-column block over all k. */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk16)(
    const int MR, const float *x, int64_t ldx, const float *p, int64_t k, float *y, int64_t ldy, int64_t cnt,
    int32_t accumulate) {
    vf acc[MRT][NV];
    for (int r = 0; r < MR; r++) for (int v = 0; v < NV; v++) acc[r][v] = SCK_NAME(splat)(0);
    for (int64_t kk = 0; kk < k; kk++) {
        vf w[NV];
        for (int v = 0; v < NV; v++) w[v] = SCK_NAME(ld)(p + v * VW);
        for (int r = 0; r < MR; r++) {
            vf s = SCK_NAME(splat)(x[r * ldx + kk]);
            for (int v = 0; v < NV; v++) acc[r][v] += s * w[v];
        }
        p += NB;
    }
    for (int r = 0; r < MR; r++) SCK_NAME(put16)(y + r * ldy, acc[r], cnt, accumulate);
}

/* One row x one block, k in four interleaved quarters (4·NV accumulators). */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk16_1)(const float *x, const float *pb, int64_t k, float *y, int64_t cnt,
                                             int32_t accumulate) {
    int64_t q = k / 4;
    vf a[4][NV];
    for (int i = 0; i < 4; i++) for (int v = 0; v < NV; v++) a[i][v] = SCK_NAME(splat)(0);
    const float *p0 = pb, *p1 = pb + q * NB, *p2 = pb + 2 * q * NB, *p3 = pb + 3 * q * NB;
    for (int64_t kk = 0; kk < q; kk++) {
        vf s0 = SCK_NAME(splat)(x[kk]), s1 = SCK_NAME(splat)(x[q + kk]), s2 = SCK_NAME(splat)(x[2 * q + kk]),
           s3 = SCK_NAME(splat)(x[3 * q + kk]);
        for (int v = 0; v < NV; v++) {
            a[0][v] += s0 * SCK_NAME(ld)(p0 + v * VW);
            a[1][v] += s1 * SCK_NAME(ld)(p1 + v * VW);
            a[2][v] += s2 * SCK_NAME(ld)(p2 + v * VW);
            a[3][v] += s3 * SCK_NAME(ld)(p3 + v * VW);
        }
        p0 += NB; p1 += NB; p2 += NB; p3 += NB;
    }
    for (int64_t kk = 4 * q; kk < k; kk++) {
        vf s = SCK_NAME(splat)(x[kk]);
        const float *e = pb + kk * NB;
        for (int v = 0; v < NV; v++) a[0][v] += s * SCK_NAME(ld)(e + v * VW);
    }
    vf out[NV];
    for (int v = 0; v < NV; v++) out[v] = (a[0][v] + a[1][v]) + (a[2][v] + a[3][v]);
    SCK_NAME(put16)(y, out, cnt, accumulate);
}

/* One row x NBK full blocks at once, each summed exactly as mk16_1 sums it (k in four
   interleaved quarters): 4·NV·NBK independent accumulators instead of 4·NV, so a single-row
   step (D) is no longer bound by the FMA latency of one block's chains. */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk16_1n)(const int NBK, const float *x, const float *pb,
                                                                           int64_t k, float *y, int32_t accumulate) {
    int64_t q = k / 4;
    vf a[4][4][NV];
    for (int b = 0; b < NBK; b++) for (int i = 0; i < 4; i++) for (int v = 0; v < NV; v++) a[b][i][v] = SCK_NAME(splat)(0);
    for (int64_t kk = 0; kk < q; kk++) {
        vf s0 = SCK_NAME(splat)(x[kk]), s1 = SCK_NAME(splat)(x[q + kk]), s2 = SCK_NAME(splat)(x[2 * q + kk]),
           s3 = SCK_NAME(splat)(x[3 * q + kk]);
        for (int b = 0; b < NBK; b++) {
            const float *p = pb + b * k * NB + kk * NB;
            for (int v = 0; v < NV; v++) {
                a[b][0][v] += s0 * SCK_NAME(ld)(p + v * VW);
                a[b][1][v] += s1 * SCK_NAME(ld)(p + q * NB + v * VW);
                a[b][2][v] += s2 * SCK_NAME(ld)(p + 2 * q * NB + v * VW);
                a[b][3][v] += s3 * SCK_NAME(ld)(p + 3 * q * NB + v * VW);
            }
        }
    }
    for (int64_t kk = 4 * q; kk < k; kk++) {
        vf s = SCK_NAME(splat)(x[kk]);
        for (int b = 0; b < NBK; b++)
            for (int v = 0; v < NV; v++) a[b][0][v] += s * SCK_NAME(ld)(pb + b * k * NB + kk * NB + v * VW);
    }
    for (int b = 0; b < NBK; b++) {
        vf out[NV];
        for (int v = 0; v < NV; v++) out[v] = (a[b][0][v] + a[b][1][v]) + (a[b][2][v] + a[b][3][v]);
        SCK_NAME(put16)(y + b * NB, out, NB, accumulate);
    }
}

/* Two rows x one block, k in two interleaved halves (4·NV accumulators). */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk16_2)(const float *x, int64_t ldx, const float *pb, int64_t k, float *y,
                                             int64_t ldy, int64_t cnt, int32_t accumulate) {
    int64_t h = k / 2;
    const float *x0 = x, *x1 = x + ldx;
    vf a[4][NV];
    for (int i = 0; i < 4; i++) for (int v = 0; v < NV; v++) a[i][v] = SCK_NAME(splat)(0);
    const float *p0 = pb, *p1 = pb + h * NB;
    for (int64_t kk = 0; kk < h; kk++) {
        vf s = SCK_NAME(splat)(x0[kk]), t = SCK_NAME(splat)(x1[kk]);
        vf u = SCK_NAME(splat)(x0[h + kk]), q = SCK_NAME(splat)(x1[h + kk]);
        for (int v = 0; v < NV; v++) {
            vf w0 = SCK_NAME(ld)(p0 + v * VW), w1 = SCK_NAME(ld)(p1 + v * VW);
            a[0][v] += s * w0; a[1][v] += t * w0;
            a[2][v] += u * w1; a[3][v] += q * w1;
        }
        p0 += NB; p1 += NB;
    }
    if (k & 1) {
        const float *e = pb + (k - 1) * NB;
        vf s = SCK_NAME(splat)(x0[k - 1]), t = SCK_NAME(splat)(x1[k - 1]);
        for (int v = 0; v < NV; v++) {
            vf w0 = SCK_NAME(ld)(e + v * VW);
            a[0][v] += s * w0; a[1][v] += t * w0;
        }
    }
    vf o0[NV], o1[NV];
    for (int v = 0; v < NV; v++) { o0[v] = a[0][v] + a[2][v]; o1[v] = a[1][v] + a[3][v]; }
    SCK_NAME(put16)(y, o0, cnt, accumulate);
    SCK_NAME(put16)(y + ldy, o1, cnt, accumulate);
}

/* All rows x one block (a k slice). Always inlined, so the call sites below that pass a
   constant cnt and accumulate get code specialised for them (the branches in put16 fold
   away): what clang's -O3 non-trivial loop unswitching did when this file was built at -O3,
   done here in the source because SwiftPM builds C at -O2. Rows MRT at a time (6 with
   8-float vectors: 12 accumulators; 12 with 16-float vectors: 12 of the 32 zmm registers),
   the rest with the same kernel; one or two rows split k instead. */
#define SCK_MK(R) case R: SCK_NAME(mk16)(R, xk + r * ldx, ldx, pb, kc, yb + r * ldy, ldy, cnt, acc); break
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(block_rows)(
    const float *xk, int64_t m, int64_t ldx, const float *pb, int64_t kc, float *yb, int64_t ldy, int64_t cnt,
    int32_t acc) {
    if (m == 1) { SCK_NAME(mk16_1)(xk, pb, kc, yb, cnt, acc); return; }
    if (m == 2) { SCK_NAME(mk16_2)(xk, ldx, pb, kc, yb, ldy, cnt, acc); return; }
    int64_t r = 0;
#if VW == 16
    /* The same row tiles as pair_rows (at most 8, near-equal), so a block gives the same
       bits whether it runs alone or in a pair (threads split blocks anywhere). */
    int64_t tiles = (m + 7) / 8, base = m / tiles, extra = m % tiles;
    for (int64_t t = 0; t < tiles; t++) {
        int64_t R = base + (t < extra);
        switch (R) {
        SCK_MK(8); SCK_MK(7); SCK_MK(6); SCK_MK(5); SCK_MK(4); SCK_MK(3);
        default: break;
        }
        r += R;
    }
#else
    for (; r + MRT <= m; r += MRT) SCK_NAME(mk16)(MRT, xk + r * ldx, ldx, pb, kc, yb + r * ldy, ldy, cnt, acc);
    switch (m - r) {
    SCK_MK(5); SCK_MK(4); SCK_MK(3);
    case 2: SCK_NAME(mk16_2)(xk + r * ldx, ldx, pb, kc, yb + r * ldy, ldy, cnt, acc); break;
    case 1: SCK_NAME(mk16_1)(xk + r * ldx, pb, kc, yb + r * ldy, cnt, acc); break;
    default: break;
    }
#endif
}
#undef SCK_MK

#if VW == 16
/* MR rows x two adjacent full 16-column blocks (p1: the second block's panel) over all k:
   2·MR zmm accumulators, MR broadcasts + 2 weight loads per 2·MR FMAs (the one-block tile
   needs MR + 1 loads per MR FMAs, and at 4 rows it has too few accumulators to hide the FMA
   latency). Same per-element k order as mk16. */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk32)(
    const int MR, const float *x, int64_t ldx, const float *p0, const float *p1, int64_t k, float *y, int64_t ldy,
    int32_t accumulate) {
    vf acc[8][2];
    for (int r = 0; r < MR; r++) { acc[r][0] = SCK_NAME(splat)(0); acc[r][1] = SCK_NAME(splat)(0); }
    for (int64_t kk = 0; kk < k; kk++) {
        vf w0 = SCK_NAME(ld)(p0), w1 = SCK_NAME(ld)(p1);
        for (int r = 0; r < MR; r++) {
            vf s = SCK_NAME(splat)(x[r * ldx + kk]);
            acc[r][0] += s * w0;
            acc[r][1] += s * w1;
        }
        p0 += NB; p1 += NB;
    }
    for (int r = 0; r < MR; r++) {
        SCK_NAME(put16)(y + r * ldy, &acc[r][0], NB, accumulate);
        SCK_NAME(put16)(y + r * ldy + NB, &acc[r][1], NB, accumulate);
    }
}

/* All rows (m >= 3) x a pair of full blocks: rows in ceil(m/8) tiles of near-equal size
   (16 rows: 8 + 8, 20: 7 + 7 + 6), so no tile is left with too few rows. Tiles of up to 8
   measured fastest (kernel_micro, AVX-512 on Zen 5: A's step 230 GFLOP/s with 8-row tiles,
   113 with 11-row tiles, whose row pointers no longer fit the registers). */
#define SCK_MK2(R) case R: SCK_NAME(mk32)(R, xk + r * ldx, ldx, pb0, pb1, kc, yb + r * ldy, ldy, acc); break
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(pair_rows)(
    const float *xk, int64_t m, int64_t ldx, const float *pb0, const float *pb1, int64_t kc, float *yb, int64_t ldy,
    int32_t acc) {
    int64_t tiles = (m + 7) / 8, base = m / tiles, extra = m % tiles, r = 0;
    for (int64_t t = 0; t < tiles; t++) {
        int64_t R = base + (t < extra);
        switch (R) {
        SCK_MK2(8); SCK_MK2(7); SCK_MK2(6); SCK_MK2(5); SCK_MK2(4); SCK_MK2(3); SCK_MK2(2);
        default: break;
        }
        r += R;
    }
}
#undef SCK_MK2
#endif

static SCK_ATTR void SCK_NAME(gemm_packed_blocks)(const float *x, int64_t m, int64_t ldx, const float *packed, int64_t n,
                                                  int64_t k, float *y, int64_t ldy, int32_t accumulate,
                                                  int64_t blk_begin, int64_t blk_end) {
    /* k in slices of KC, slices after the first accumulating into y; one or two rows take
       all of k at once. From three rows on KC depends on k only (not on m or the block
       range), so threads splitting a product by blocks, and the panels of a projection, get
       the same bits (by rows too on the AVX-512 path; the 8-float paths give a 1- or 2-row
       remainder its own k order). Up to k = 1024 all of k is one slice (a
       pair's panels, 2·k·64 bytes, 128 KB at k = 1024, then serve the later row tiles from
       L2 rather than L1, and y is read and written once): measured faster than 256-float
       slices on E's shapes (kernel_micro, avx512 and avx2, Zen 5) and no slower on A, B and
       C (docs/PERFORMANCE.md, "Whole-k slices"). */
    const int64_t KC = m <= 2 || k <= 1024 ? k : 1024;
    if (m == 1) {
        /* One row: full blocks NB1 at a time (mk16_1n; pairs measured fastest with 16-float
           vectors: D's step 54 -> 60-72 GFLOP/s, kernel_micro), the rest one by one below. */
        const int NB1 = VW == 16 ? 2 : 1;
        for (; blk_begin + NB1 <= blk_end && n - (blk_begin + NB1 - 1) * NB >= NB; blk_begin += NB1) {
            if (accumulate) SCK_NAME(mk16_1n)(NB1, x, packed + blk_begin * k * NB, k, y + blk_begin * NB, 1);
            else SCK_NAME(mk16_1n)(NB1, x, packed + blk_begin * k * NB, k, y + blk_begin * NB, 0);
        }
    }
#if VW == 16
    /* Pairs of full blocks first (mk32), a last odd or partial block as below. */
    if (m >= 3) {
        for (; blk_begin + 1 < blk_end && n - (blk_begin + 1) * NB >= NB; blk_begin += 2)
        for (int64_t k0 = 0; k0 < k; k0 += KC) {
            int64_t kc = k - k0 < KC ? k - k0 : KC;
            const float *pb = packed + blk_begin * k * NB + k0 * NB;
            float *yb = y + blk_begin * NB;
            if (k0 == 0 && !accumulate) SCK_NAME(pair_rows)(x + k0, m, ldx, pb, pb + k * NB, kc, yb, ldy, 0);
            else SCK_NAME(pair_rows)(x + k0, m, ldx, pb, pb + k * NB, kc, yb, ldy, 1);
        }
    }
#endif
    for (int64_t blk = blk_begin; blk < blk_end; blk++)
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        const float *pb = packed + blk * k * NB + k0 * NB;
        const float *xk = x + k0;
        int32_t acc = k0 == 0 ? accumulate : 1;
        int64_t cnt = n - blk * NB < NB ? n - blk * NB : NB;
        float *yb = y + blk * NB;
        if (cnt == NB && acc) SCK_NAME(block_rows)(xk, m, ldx, pb, kc, yb, ldy, NB, 1);
        else if (cnt == NB) SCK_NAME(block_rows)(xk, m, ldx, pb, kc, yb, ldy, NB, 0);
        else SCK_NAME(block_rows)(xk, m, ldx, pb, kc, yb, ldy, cnt, acc);
    }
}

static SCK_ATTR void SCK_NAME(gemm_packed)(const float *x, int64_t m, int64_t ldx, const float *packed, int64_t n,
                                           int64_t k, float *y, int64_t ldy, int32_t accumulate) {
    SCK_NAME(gemm_packed_blocks)(x, m, ldx, packed, n, k, y, ldy, accumulate, 0, (n + NB - 1) / NB);
}
#undef NB

/* The packed GEMM with its x operand read transposed: y[r, :] (+)= Σ_kk x[kk·ldx + r] · W[:, kk]
   for r < m, i.e. y = xᵀ·Wᵀ with x a row-major [k, ldx] matrix (a weight gradient dW += dᵀ·S
   reads the gradients d [T·B, rows] this way, W = Sᵀ packed from S). A row tile broadcasts
   consecutive floats of one x row per k. k in slices of KC outermost, rows in groups of XM
   whose x slice is copied once to a contiguous buffer and used by every block pair; each
   output element sums its k terms in order, a slice at a time added into y, whatever m, the
   row tiles or the blocks are (so threads may split y by rows or blocks). Blocks
   [blk_begin, blk_end) only. */
#define NB 16
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk16t)(
    const int MR, const float *x, int64_t ldx, const float *p, int64_t k, float *y, int64_t ldy, int64_t cnt,
    int32_t accumulate) {
    vf acc[MRT][NV];
    for (int r = 0; r < MR; r++) for (int v = 0; v < NV; v++) acc[r][v] = SCK_NAME(splat)(0);
    for (int64_t kk = 0; kk < k; kk++) {
        vf w[NV];
        for (int v = 0; v < NV; v++) w[v] = SCK_NAME(ld)(p + v * VW);
        const float *xr = x + kk * ldx;
        for (int r = 0; r < MR; r++) {
            vf s = SCK_NAME(splat)(xr[r]);
            for (int v = 0; v < NV; v++) acc[r][v] += s * w[v];
        }
        p += NB;
    }
    for (int r = 0; r < MR; r++) SCK_NAME(put16)(y + r * ldy, acc[r], cnt, accumulate);
}

#define SCK_MKT(R) case R: SCK_NAME(mk16t)(R, xk + r, ldx, pb, kc, yb + r * ldy, ldy, cnt, acc); break
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(block_rows_t)(
    const float *xk, int64_t m, int64_t ldx, const float *pb, int64_t kc, float *yb, int64_t ldy, int64_t cnt,
    int32_t acc) {
    int64_t r = 0;
#if VW == 16
    int64_t tiles = (m + 7) / 8, base = m / tiles, extra = m % tiles;
    for (int64_t t = 0; t < tiles; t++) {
        int64_t R = base + (t < extra);
        switch (R) {
        SCK_MKT(8); SCK_MKT(7); SCK_MKT(6); SCK_MKT(5); SCK_MKT(4); SCK_MKT(3); SCK_MKT(2); SCK_MKT(1);
        default: break;
        }
        r += R;
    }
#else
    for (; r + MRT <= m; r += MRT) SCK_NAME(mk16t)(MRT, xk + r, ldx, pb, kc, yb + r * ldy, ldy, cnt, acc);
    switch (m - r) {
    SCK_MKT(5); SCK_MKT(4); SCK_MKT(3); SCK_MKT(2); SCK_MKT(1);
    default: break;
    }
#endif
}
#undef SCK_MKT

#if VW == 16
/* MR rows x two adjacent full blocks, x transposed (mk32's tile). */
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(mk32t)(
    const int MR, const float *x, int64_t ldx, const float *p0, const float *p1, int64_t k, float *y, int64_t ldy,
    int32_t accumulate) {
    vf acc[8][2];
    for (int r = 0; r < MR; r++) { acc[r][0] = SCK_NAME(splat)(0); acc[r][1] = SCK_NAME(splat)(0); }
    for (int64_t kk = 0; kk < k; kk++) {
        vf w0 = SCK_NAME(ld)(p0), w1 = SCK_NAME(ld)(p1);
        const float *xr = x + kk * ldx;
        for (int r = 0; r < MR; r++) {
            vf s = SCK_NAME(splat)(xr[r]);
            acc[r][0] += s * w0;
            acc[r][1] += s * w1;
        }
        p0 += NB; p1 += NB;
    }
    for (int r = 0; r < MR; r++) {
        SCK_NAME(put16)(y + r * ldy, &acc[r][0], NB, accumulate);
        SCK_NAME(put16)(y + r * ldy + NB, &acc[r][1], NB, accumulate);
    }
}

#define SCK_MK2T(R) case R: SCK_NAME(mk32t)(R, xk + r, ldx, pb0, pb1, kc, yb + r * ldy, ldy, acc); break
static inline __attribute__((always_inline)) SCK_ATTR void SCK_NAME(pair_rows_t)(
    const float *xk, int64_t m, int64_t ldx, const float *pb0, const float *pb1, int64_t kc, float *yb, int64_t ldy,
    int32_t acc) {
    int64_t tiles = (m + 7) / 8, base = m / tiles, extra = m % tiles, r = 0;
    for (int64_t t = 0; t < tiles; t++) {
        int64_t R = base + (t < extra);
        switch (R) {
        SCK_MK2T(8); SCK_MK2T(7); SCK_MK2T(6); SCK_MK2T(5); SCK_MK2T(4); SCK_MK2T(3); SCK_MK2T(2); SCK_MK2T(1);
        default: break;
        }
        r += R;
    }
}
#undef SCK_MK2T
#endif

static SCK_ATTR void SCK_NAME(gemm_packed_xt_blocks)(const float *x, int64_t m, int64_t ldx, const float *packed,
                                                     int64_t n, int64_t k, float *y, int64_t ldy, int32_t accumulate,
                                                     int64_t blk_begin, int64_t blk_end) {
    /* Each k slice of up to XM rows is first copied into xb [kc][mc] (32 KB on the stack):
       read in place, x's rows are ldx apart (4 KB for an LSTM with H = 256), so a tile's
       broadcasts all fall in a few L1 sets and every block pair fetched them from L2 again. */
    enum { KC = 256, XM = 32 };
    float xb[KC * XM] __attribute__((aligned(64)));
    if (m <= 0) return;
    for (int64_t k0 = 0; k0 < k; k0 += KC) {
        int64_t kc = k - k0 < KC ? k - k0 : KC;
        int32_t acc = k0 == 0 ? accumulate : 1;
        for (int64_t m0 = 0; m0 < m; m0 += XM) {
            int64_t mc = m - m0 < XM ? m - m0 : XM;
            const float *xs = x + k0 * ldx + m0;
            if (mc == XM) { for (int64_t kk = 0; kk < kc; kk++) __builtin_memcpy(xb + kk * XM, xs + kk * ldx, XM * 4); }
            else { for (int64_t kk = 0; kk < kc; kk++) for (int64_t r = 0; r < mc; r++) xb[kk * mc + r] = xs[kk * ldx + r]; }
            float *ym = y + m0 * ldy;
            int64_t blk = blk_begin;
#if VW == 16
            for (; blk + 1 < blk_end && n - (blk + 1) * NB >= NB; blk += 2) {
                const float *pb = packed + blk * k * NB + k0 * NB;
                if (acc) SCK_NAME(pair_rows_t)(xb, mc, mc, pb, pb + k * NB, kc, ym + blk * NB, ldy, 1);
                else SCK_NAME(pair_rows_t)(xb, mc, mc, pb, pb + k * NB, kc, ym + blk * NB, ldy, 0);
            }
#endif
            for (; blk < blk_end; blk++) {
                const float *pb = packed + blk * k * NB + k0 * NB;
                int64_t cnt = n - blk * NB < NB ? n - blk * NB : NB;
                float *yb = ym + blk * NB;
                if (cnt == NB && acc) SCK_NAME(block_rows_t)(xb, mc, mc, pb, kc, yb, ldy, NB, 1);
                else if (cnt == NB) SCK_NAME(block_rows_t)(xb, mc, mc, pb, kc, yb, ldy, NB, 0);
                else SCK_NAME(block_rows_t)(xb, mc, mc, pb, kc, yb, ldy, cnt, acc);
            }
        }
    }
}
#undef NB

static const sck_table SCK_NAME(table) = {
    .isa = SCK_ISA_VALUE,
    .sigmoid = SCK_NAME(sigmoid),
    .tanh = SCK_NAME(tanh),
    .lstm_row = SCK_NAME(lstm_row),
    .lstm_row_backward = SCK_NAME(lstm_row_backward),
    .gru_row = SCK_NAME(gru_row),
    .tanh_copy = SCK_NAME(tanh_copy),
    .gemm_packed = SCK_NAME(gemm_packed),
    .gemm_packed_blocks = SCK_NAME(gemm_packed_blocks),
    .lstm_row_range = SCK_NAME(lstm_row_range),
    .gru_row_range = SCK_NAME(gru_row_range),
    .gemm_packed_xt_blocks = SCK_NAME(gemm_packed_xt_blocks),
    .gru_row_backward = SCK_NAME(gru_row_backward),
};

#undef VW
#undef NV
#undef MRT
#undef vf
#undef vi
