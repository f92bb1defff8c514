/*
 * test_jwt — JWT verification against tokens signed here, with keys made at start-up (RSA
 * 2048, EC P-256, a random HS256 secret; nothing key-like is committed): the three algorithms
 * accepted with their claims, every refusal with the exact reason a log line would show (the
 * algorithm checks, key confusion, signatures, times and leeway, claim types, strict parsing,
 * the length bound), the key file errors an operator would see, and concurrent use from
 * several threads (meaningful under the tsan preset).
 *
 * The signing helper uses other OpenSSL calls than src/jwt.c (HMAC(), EVP_DigestSign, a
 * base64 encoder from EVP_EncodeBlock), so a shared mistake is unlikely to cancel out.
 */
#include "../../src/jwt.c" /* b64url_decode */

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "test_util.h"

/* 2027-01-15T08:00:00Z; tokens expire ten minutes later unless a test says otherwise. */
#define NOW INT64_C(1800000000)
#define EXP (NOW + 600)

#define TOKEN_CAP ((size_t)4 * DW_JWT_MAX_LEN)

/* ------------------------------------------------------------------------------------------
 * Fixture: keys, key files and verifiers, made once for the group
 * ------------------------------------------------------------------------------------------ */

static struct {
    char dir[64];
    unsigned char secret[DW_JWT_MIN_SECRET], other_secret[DW_JWT_MIN_SECRET];
    EVP_PKEY *rsa, *ec;
    char rsa_path[128], ec_path[128];
    char *rsa_pem; /* the RSA public key file's bytes: the classic confusion secret */
    size_t rsa_pem_len;
    struct dw_jwt_verifier *hs, *rs, *es;
} F;

static void path_in_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", F.dir, name);
}

/* Writes pkey's public half (or its private key when private) as PEM to dir/name. */
static void write_pem(const char *name, EVP_PKEY *pkey, bool private, char *path, size_t cap)
{
    FILE *f;

    path_in_dir(path, cap, name);
    f = fopen(path, "w");
    assert_non_null(f);
    if (private)
        assert_int_equal(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_PUBKEY(f, pkey), 1);
    assert_int_equal(fclose(f), 0);
}

static void write_text(const char *name, const char *text, char *path, size_t cap)
{
    FILE *f;

    path_in_dir(path, cap, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(16384);

    assert_non_null(f);
    assert_non_null(buf);
    *len = fread(buf, 1, 16384, f);
    assert_true(*len > 0 && *len < 16384);
    fclose(f);
    return buf;
}

static struct dw_jwt_verifier *new_pem_ok(const char *path)
{
    char err[256] = "";
    struct dw_jwt_verifier *v = dw_jwt_verifier_new_pem(path, err, sizeof(err));

    if (!v)
        fail_msg("%s: %s", path, err);
    return v;
}

static int group_setup(void **state)
{
    char err[256] = "";

    (void)state;
    snprintf(F.dir, sizeof(F.dir), "/tmp/dw_test_jwt_XXXXXX");
    assert_non_null(mkdtemp(F.dir));
    assert_int_equal(RAND_bytes(F.secret, sizeof(F.secret)), 1);
    assert_int_equal(RAND_bytes(F.other_secret, sizeof(F.other_secret)), 1);
    F.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    F.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(F.rsa);
    assert_non_null(F.ec);
    write_pem("rsa.pem", F.rsa, false, F.rsa_path, sizeof(F.rsa_path));
    write_pem("ec.pem", F.ec, false, F.ec_path, sizeof(F.ec_path));
    F.rsa_pem = read_all(F.rsa_path, &F.rsa_pem_len);

    F.hs = dw_jwt_verifier_new_hs256(F.secret, sizeof(F.secret), err, sizeof(err));
    if (!F.hs)
        fail_msg("hs256: %s", err);
    F.rs = new_pem_ok(F.rsa_path);
    F.es = new_pem_ok(F.ec_path);
    return 0;
}

/* Removes dir and the files in it (the tests make no subdirectory): 0, or -1. */
static int remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            unlinkat(dirfd(d), e->d_name, 0) != 0)
            rc = -1;
    }
    closedir(d);
    return rmdir(dir) == 0 ? rc : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    dw_jwt_verifier_free(F.hs);
    dw_jwt_verifier_free(F.rs);
    dw_jwt_verifier_free(F.es);
    EVP_PKEY_free(F.rsa);
    EVP_PKEY_free(F.ec);
    free(F.rsa_pem);
    return remove_dir(F.dir);
}

/* ------------------------------------------------------------------------------------------
 * Signing (test only)
 * ------------------------------------------------------------------------------------------ */

enum signer {
    SIGN_HS256,       /* the verifier's secret */
    SIGN_HS256_OTHER, /* another secret */
    SIGN_HS256_PEM,   /* the RSA public key file's bytes as the secret */
    SIGN_RS256,
    SIGN_ES256,     /* R || S, as JWS wants */
    SIGN_ES256_DER, /* the DER that OpenSSL makes, as a careless signer would send it */
    SIGN_NONE,      /* an empty signature */
};

struct tok {
    char s[TOKEN_CAP];
    size_t len;
};

static size_t b64url(const void *in, size_t len, char *out)
{
    int n;

    assert_true(len < TOKEN_CAP / 2);
    n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    assert_true(n >= 0);
    while (n > 0 && out[n - 1] == '=')
        n--;
    for (int i = 0; i < n; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    out[n] = '\0';
    return (size_t)n;
}

static void append(struct tok *t, const char *s, size_t n)
{
    assert_true(t->len + n < TOKEN_CAP);
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

/* t = b64url(hdr) "." b64url(payload) */
static void tok_begin(struct tok *t, const char *hdr, const char *payload)
{
    static char enc[TOKEN_CAP];
    size_t n;

    t->len = 0;
    n = b64url(hdr, strlen(hdr), enc);
    append(t, enc, n);
    append(t, ".", 1);
    n = b64url(payload, strlen(payload), enc);
    append(t, enc, n);
}

/* t += "." b64url(sig) */
static void tok_end(struct tok *t, const unsigned char *sig, size_t len)
{
    char enc[1024];
    size_t n = b64url(sig, len, enc);

    append(t, ".", 1);
    append(t, enc, n);
}

static size_t hmac(const void *key, size_t key_len, const char *data, size_t len,
                   unsigned char *sig)
{
    unsigned int n = 0;

    assert_non_null(
        HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, sig, &n));
    assert_int_equal(n, 32);
    return n;
}

static size_t digest_sign(EVP_PKEY *pkey, const char *data, size_t len, unsigned char *sig,
                          size_t cap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = cap;

    assert_non_null(ctx);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)data, len), 1);
    EVP_MD_CTX_free(ctx);
    return n;
}

/* The raw JWS signature of data (sig has room for 512 bytes); returns its length. */
static size_t sign_raw(enum signer how, const char *data, size_t len, unsigned char *sig)
{
    unsigned char der[128];
    const unsigned char *p = der;
    const BIGNUM *r, *s;
    ECDSA_SIG *es;
    size_t n;

    switch (how) {
    case SIGN_HS256:
        return hmac(F.secret, sizeof(F.secret), data, len, sig);
    case SIGN_HS256_OTHER:
        return hmac(F.other_secret, sizeof(F.other_secret), data, len, sig);
    case SIGN_HS256_PEM:
        return hmac(F.rsa_pem, F.rsa_pem_len, data, len, sig);
    case SIGN_RS256:
        return digest_sign(F.rsa, data, len, sig, 512);
    case SIGN_ES256_DER:
        return digest_sign(F.ec, data, len, sig, 512);
    case SIGN_ES256:
        n = digest_sign(F.ec, data, len, der, sizeof(der));
        es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        assert_non_null(es);
        ECDSA_SIG_get0(es, &r, &s);
        assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
        assert_int_equal(BN_bn2binpad(s, sig + 32, 32), 32);
        ECDSA_SIG_free(es);
        return 64;
    case SIGN_NONE:
        return 0;
    }
    fail();
    return 0;
}

static void make(struct tok *t, enum signer how, const char *hdr, const char *payload)
{
    unsigned char sig[512];
    size_t n;

    tok_begin(t, hdr, payload);
    n = sign_raw(how, t->s, t->len, sig);
    tok_end(t, sig, n);
}

static const char *hdr_of(enum signer how)
{
    switch (how) {
    case SIGN_RS256:
        return "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    case SIGN_ES256:
    case SIGN_ES256_DER:
        return "{\"alg\":\"ES256\",\"typ\":\"JWT\"}";
    case SIGN_NONE:
        return "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    default:
        return "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    }
}

/* A token with the usual header for how and this payload. */
static void make_p(struct tok *t, enum signer how, const char *payload)
{
    make(t, how, hdr_of(how), payload);
}

static const char *payload_ok(void)
{
    static char buf[128];

    snprintf(buf, sizeof(buf), "{\"sub\":\"alice\",\"exp\":%lld}", (long long)EXP);
    return buf;
}

/* ------------------------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------------------------ */

static void verify_ok_at(const struct dw_jwt_verifier *v, const struct tok *t, int64_t now,
                         int64_t leeway, struct dw_jwt_claims *c)
{
    const char *why = "unset";
    int r = dw_jwt_verify(v, t->s, t->len, now, leeway, c, &why);

    if (r != 0)
        fail_msg("%s token refused (%d, %s): %.300s", dw_jwt_verifier_alg(v), r, why ? why : "?",
                 t->s);
    assert_null(why);
    assert_int_equal(ERR_peek_error(), 0);
}

static void verify_ok(const struct dw_jwt_verifier *v, const struct tok *t, struct dw_jwt_claims *c)
{
    verify_ok_at(v, t, NOW, 0, c);
}

static void refused_at(const struct dw_jwt_verifier *v, const char *s, size_t len, int64_t now,
                       int64_t leeway, const char *want)
{
    struct dw_jwt_claims c;
    const char *why = NULL;
    int r;

    memset(&c, 0x5a, sizeof(c));
    r = dw_jwt_verify(v, s, len, now, leeway, &c, &why);
    if (r != -EPERM)
        fail_msg("%s: got %d (%s), want refused as \"%s\": %.300s", dw_jwt_verifier_alg(v), r,
                 why ? why : "accepted", want, s);
    assert_int_equal(r, -1); /* -EPERM, as callers may test */
    assert_non_null(why);
    if (strcmp(why, want) != 0)
        fail_msg("%s: refused as \"%s\", want \"%s\": %.300s", dw_jwt_verifier_alg(v), why, want,
                 s);
    /* Nothing half-filled is left for a careless caller. */
    assert_int_equal(c.sub[0], '\0');
    assert_int_equal(c.n_channels, 0);
    assert_int_equal(c.exp, 0);
    /* Nothing is left on this thread's OpenSSL error queue. */
    assert_int_equal(ERR_peek_error(), 0);
}

static void refused(const struct dw_jwt_verifier *v, const struct tok *t, const char *want)
{
    refused_at(v, t->s, t->len, NOW, 0, want);
}

static void refused_str(const struct dw_jwt_verifier *v, const char *s, const char *want)
{
    refused_at(v, s, strlen(s), NOW, 0, want);
}

/* An HS256 token with payload, expected refused as want. */
static void payload_refused(const char *payload, const char *want)
{
    struct tok t;

    make_p(&t, SIGN_HS256, payload);
    refused(F.hs, &t, want);
}

/* ------------------------------------------------------------------------------------------
 * base64url
 * ------------------------------------------------------------------------------------------ */

static void b64_expect(const char *in, const char *want, size_t want_len)
{
    unsigned char out[64];
    size_t n = 999;

    if (b64url_decode(in, strlen(in), out, &n) != 0)
        fail_msg("\"%s\" refused", in);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void b64_refused(const char *in)
{
    unsigned char out[64];
    size_t n = 999;

    if (b64url_decode(in, strlen(in), out, &n) != -EINVAL)
        fail_msg("\"%s\" decoded, want refused", in);
    assert_int_equal(n, 999);
}

static void test_b64url_decode(void **state)
{
    unsigned char data[256], out[400];
    char enc[400];

    (void)state;
    b64_expect("", "", 0);
    b64_expect("QQ", "A", 1);
    b64_expect("QUI", "AB", 2);
    b64_expect("QUJD", "ABC", 3);
    b64_expect("-_-_", "\xfb\xff\xbf", 3);

    b64_refused("Q");       /* 4n + 1 characters */
    b64_refused("QUJDR");   /* 4n + 1 characters */
    b64_refused("QR");      /* non-zero bits left over: a second encoding of "A" */
    b64_refused("QUJ");     /* likewise for "AB" */
    b64_refused("QQ==");    /* padding */
    b64_refused("QUI=");    /* padding */
    b64_refused("+/+/");    /* the standard alphabet */
    b64_refused("QU I");    /* whitespace */
    b64_refused("QUI\n");   /* newline */
    b64_refused("QU.J");    /* a dot: a fourth segment */
    b64_refused("QU\x80J"); /* high bytes */

    /* Every byte value, every tail length, against the test's own encoder. */
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(data); len += (len < 10 ? 1 : 37)) {
        size_t elen = b64url(data, len, enc), n = 0;

        assert_int_equal(b64url_decode(enc, elen, out, &n), 0);
        assert_int_equal(n, len);
        assert_memory_equal(out, data, len);
    }
}

/* ------------------------------------------------------------------------------------------
 * Accepted tokens
 * ------------------------------------------------------------------------------------------ */

static void test_verifier_algs(void **state)
{
    (void)state;
    assert_string_equal(dw_jwt_verifier_alg(F.hs), "HS256");
    assert_string_equal(dw_jwt_verifier_alg(F.rs), "RS256");
    assert_string_equal(dw_jwt_verifier_alg(F.es), "ES256");
}

/* sub, exp, nbf, iat and channels come out as signed, with each verifier. */
static void check_valid(const struct dw_jwt_verifier *v, enum signer how, const char *min_hdr)
{
    struct dw_jwt_claims c;
    struct tok t;
    char payload[256];

    snprintf(payload, sizeof(payload),
             "{\"iss\":\"https://auth.example\",\"sub\":\"user-42@example.com\",\"exp\":%lld,"
             "\"nbf\":%lld,\"iat\":%lld,\"channels\":[\"vip_deals\",\"deals.eu:1\"],"
             "\"aud\":[\"x\"],\"extra\":{\"n\":[1,2]}}",
             (long long)EXP, (long long)(NOW - 60), (long long)(NOW - 61));
    make_p(&t, how, payload);
    verify_ok(v, &t, &c);
    assert_string_equal(c.sub, "user-42@example.com");
    assert_int_equal(c.exp, EXP);
    assert_true(c.has_nbf);
    assert_int_equal(c.nbf, NOW - 60);
    assert_true(c.has_iat);
    assert_int_equal(c.iat, NOW - 61);
    assert_int_equal(c.n_channels, 2);
    assert_string_equal(c.channels[0], "vip_deals");
    assert_string_equal(c.channels[1], "deals.eu:1");

    /* The minimal token: no nbf, iat, channels, typ. */
    make(&t, how, min_hdr, payload_ok());
    memset(&c, 0x5a, sizeof(c));
    verify_ok(v, &t, &c);
    assert_string_equal(c.sub, "alice");
    assert_int_equal(c.exp, EXP);
    assert_false(c.has_nbf);
    assert_false(c.has_iat);
    assert_int_equal(c.n_channels, 0);

    /* The token is read by length, not up to a NUL. */
    make_p(&t, how, payload_ok());
    t.s[t.len] = 'A';
    verify_ok(v, &t, &c);
    t.s[t.len] = '\0';
}

static void test_valid_hs256(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    check_valid(F.hs, SIGN_HS256, "{\"alg\":\"HS256\"}");

    /* typ is compared without case; the header may carry other members (kid). */
    make(&t, SIGN_HS256, "{\"typ\":\"jwt\",\"kid\":\"k1\",\"alg\":\"HS256\"}", payload_ok());
    verify_ok(F.hs, &t, &c);
}

static void test_valid_rs256(void **state)
{
    (void)state;
    check_valid(F.rs, SIGN_RS256, "{\"alg\":\"RS256\"}");
}

static void test_valid_es256(void **state)
{
    (void)state;
    check_valid(F.es, SIGN_ES256, "{\"alg\":\"ES256\"}");
}

/* ------------------------------------------------------------------------------------------
 * Times and leeway
 * ------------------------------------------------------------------------------------------ */

static void test_expired(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    make_p(&t, SIGN_HS256, payload_ok());
    verify_ok_at(F.hs, &t, EXP - 1, 0, &c);
    refused_at(F.hs, t.s, t.len, EXP, 0, "expired"); /* now >= exp */
    refused_at(F.hs, t.s, t.len, EXP + 3600, 0, "expired");

    /* Within the leeway: accepted up to exp + leeway, exclusive. */
    verify_ok_at(F.hs, &t, EXP + 10, 30, &c);
    verify_ok_at(F.hs, &t, EXP + 29, 30, &c);
    refused_at(F.hs, t.s, t.len, EXP + 30, 30, "expired");

    /* The same rule with the other algorithms. */
    make_p(&t, SIGN_RS256, payload_ok());
    refused_at(F.rs, t.s, t.len, EXP, 0, "expired");
    verify_ok_at(F.rs, &t, EXP, 5, &c);
    make_p(&t, SIGN_ES256, payload_ok());
    refused_at(F.es, t.s, t.len, EXP, 0, "expired");
    verify_ok_at(F.es, &t, EXP, 5, &c);

    /* exp 0 is long gone. */
    payload_refused("{\"sub\":\"alice\",\"exp\":0}", "expired");
}

static void test_not_yet_valid(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;
    char payload[128];

    (void)state;
    snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld,\"nbf\":%lld}",
             (long long)EXP, (long long)(NOW + 60));
    make_p(&t, SIGN_HS256, payload);
    refused(F.hs, &t, "not yet valid");
    refused_at(F.hs, t.s, t.len, NOW, 59, "not yet valid"); /* now + leeway < nbf */
    verify_ok_at(F.hs, &t, NOW, 60, &c);
    assert_int_equal(c.nbf, NOW + 60);
    verify_ok_at(F.hs, &t, NOW + 60, 0, &c);

    /* iat in the future is not a reason by itself (only its type is checked). */
    snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld,\"iat\":%lld}",
             (long long)EXP, (long long)(NOW + 300));
    make_p(&t, SIGN_HS256, payload);
    verify_ok(F.hs, &t, &c);
    assert_int_equal(c.iat, NOW + 300);
}

/* NumericDates may have a fraction: rounded toward refusal. */
static void test_fractional_times(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;
    char payload[128];

    (void)state;
    snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld.5,\"nbf\":%lld.25}",
             (long long)EXP, (long long)(NOW - 1));
    make_p(&t, SIGN_HS256, payload);
    verify_ok(F.hs, &t, &c);
    assert_int_equal(c.exp, EXP); /* down */
    assert_int_equal(c.nbf, NOW); /* up */
    refused_at(F.hs, t.s, t.len, EXP, 0, "expired");
    refused_at(F.hs, t.s, t.len, NOW - 1, 0, "not yet valid");

    snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":1.8e9,\"iat\":1.7e9}");
    make_p(&t, SIGN_HS256, payload);
    verify_ok_at(F.hs, &t, 1700000000, 0, &c);
    assert_int_equal(c.exp, 1800000000);
    assert_int_equal(c.iat, 1700000000);
}

/* ------------------------------------------------------------------------------------------
 * Signatures and algorithms
 * ------------------------------------------------------------------------------------------ */

/* A token signed by how with byte i of its signature flipped. */
static void make_flipped(struct tok *t, enum signer how, size_t i)
{
    unsigned char sig[512];
    size_t n;

    tok_begin(t, hdr_of(how), payload_ok());
    n = sign_raw(how, t->s, t->len, sig);
    assert_true(i < n);
    sig[i] ^= 0x01;
    tok_end(t, sig, n);
}

/* A token signed by how with the last cut bytes of its signature cut off. */
static void make_truncated(struct tok *t, enum signer how, size_t cut)
{
    unsigned char sig[512];
    size_t n;

    tok_begin(t, hdr_of(how), payload_ok());
    n = sign_raw(how, t->s, t->len, sig);
    assert_true(cut < n);
    tok_end(t, sig, n - cut);
}

static void test_bad_signature(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    make_flipped(&t, SIGN_HS256, 0);
    refused(F.hs, &t, "bad signature");
    make_flipped(&t, SIGN_HS256, 31);
    refused(F.hs, &t, "bad signature");
    make_flipped(&t, SIGN_RS256, 100);
    refused(F.rs, &t, "bad signature");
    make_flipped(&t, SIGN_ES256, 5); /* in R */
    refused(F.es, &t, "bad signature");
    make_flipped(&t, SIGN_ES256, 40); /* in S */
    refused(F.es, &t, "bad signature");

    /* Wrong secret. */
    make_p(&t, SIGN_HS256_OTHER, payload_ok());
    refused(F.hs, &t, "bad signature");

    /* A signed token whose payload is changed afterwards (alice becomes admin). */
    make_p(&t, SIGN_HS256, payload_ok());
    verify_ok(F.hs, &t, &c);
    {
        struct tok forged;
        char payload[128];
        const char *sig = strrchr(t.s, '.');

        snprintf(payload, sizeof(payload), "{\"sub\":\"admin\",\"exp\":%lld}", (long long)EXP);
        tok_begin(&forged, hdr_of(SIGN_HS256), payload);
        append(&forged, sig, strlen(sig));
        refused(F.hs, &forged, "bad signature");
    }

    /* An empty signature, and truncated ones. */
    tok_begin(&t, hdr_of(SIGN_HS256), payload_ok());
    append(&t, ".", 1);
    refused(F.hs, &t, "bad signature");
    make_truncated(&t, SIGN_HS256, 1);
    refused(F.hs, &t, "bad signature");
    make_truncated(&t, SIGN_RS256, 1);
    refused(F.rs, &t, "bad signature");
    make_truncated(&t, SIGN_RS256, 128);
    refused(F.rs, &t, "bad signature");
}

static void test_alg_none(void **state)
{
    struct tok t;

    (void)state;
    make_p(&t, SIGN_NONE, payload_ok());
    assert_int_equal(t.s[t.len - 1], '.'); /* header.payload. */
    refused(F.hs, &t, "algorithm mismatch");
    refused(F.rs, &t, "algorithm mismatch");
    refused(F.es, &t, "algorithm mismatch");

    /* Spellings that some libraries took for "none". */
    make(&t, SIGN_NONE, "{\"alg\":\"None\"}", payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    make(&t, SIGN_NONE, "{\"alg\":\"NONE\"}", payload_ok());
    refused(F.rs, &t, "algorithm mismatch");
    make(&t, SIGN_NONE, "{\"alg\":\"\"}", payload_ok());
    refused(F.es, &t, "algorithm mismatch");

    /* "none" with a genuine HS256 signature: the header alone decides. */
    make(&t, SIGN_HS256, "{\"alg\":\"none\"}", payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
}

/* The classic confusion: HS256 with the RSA public key file as the HMAC secret. */
static void test_key_confusion(void **state)
{
    struct dw_jwt_verifier *pem_hs;
    struct dw_jwt_claims c;
    struct tok t;
    char err[256];

    (void)state;
    make_p(&t, SIGN_HS256_PEM, payload_ok());
    refused(F.rs, &t, "algorithm mismatch");

    /* The forged token is otherwise perfect: a verifier that took the key file as an HMAC
     * secret would accept it, so the refusal above is the algorithm check's doing. */
    pem_hs = dw_jwt_verifier_new_hs256((const unsigned char *)F.rsa_pem, F.rsa_pem_len, err,
                                       sizeof(err));
    assert_non_null(pem_hs);
    verify_ok(pem_hs, &t, &c);
    assert_string_equal(c.sub, "alice");
    dw_jwt_verifier_free(pem_hs);

    /* The same against the EC verifier, with its own key file's bytes. */
    {
        size_t len;
        char *pem = read_all(F.ec_path, &len);
        unsigned char sig[32];

        tok_begin(&t, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload_ok());
        tok_end(&t, sig, hmac(pem, len, t.s, t.len, sig));
        refused(F.es, &t, "algorithm mismatch");
        free(pem);
    }
}

static void test_alg_mismatch(void **state)
{
    struct tok t;

    (void)state;
    /* RS256 to the HS256 verifier (properly RSA-signed), and every other pairing. */
    make_p(&t, SIGN_RS256, payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    refused(F.es, &t, "algorithm mismatch");
    make_p(&t, SIGN_ES256, payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    refused(F.rs, &t, "algorithm mismatch");
    make_p(&t, SIGN_HS256, payload_ok());
    refused(F.es, &t, "algorithm mismatch");

    /* Names are exact. */
    make(&t, SIGN_HS256, "{\"alg\":\"hs256\"}", payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256 \"}", payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    make(&t, SIGN_HS256, "{\"alg\":\"HS384\"}", payload_ok());
    refused(F.hs, &t, "algorithm mismatch");
    make(&t, SIGN_RS256, "{\"alg\":\"PS256\"}", payload_ok());
    refused(F.rs, &t, "algorithm mismatch");

    /* alg missing, or not a string, or with a NUL inside. */
    make(&t, SIGN_HS256, "{\"typ\":\"JWT\"}", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{\"alg\":null}", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{\"alg\":[\"HS256\"]}", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\\u0000x\"}", payload_ok());
    refused(F.hs, &t, "malformed header");
}

/* JWS wants R || S, exactly 64 bytes. */
static void test_es256_signature_length(void **state)
{
    unsigned char sig[512];
    struct tok t;
    size_t n;

    (void)state;
    /* The DER that OpenSSL makes (70 to 72 bytes) is not JWS. */
    make_p(&t, SIGN_ES256_DER, payload_ok());
    refused(F.es, &t, "bad signature");

    /* A good R || S, one byte short or one byte long. */
    tok_begin(&t, hdr_of(SIGN_ES256), payload_ok());
    n = sign_raw(SIGN_ES256, t.s, t.len, sig);
    assert_int_equal(n, 64);
    tok_end(&t, sig, 63);
    refused(F.es, &t, "bad signature");

    tok_begin(&t, hdr_of(SIGN_ES256), payload_ok());
    sig[64] = 0;
    tok_end(&t, sig, 65);
    refused(F.es, &t, "bad signature");

    /* A leading zero byte in front of S (a 65-byte form some encoders make). */
    tok_begin(&t, hdr_of(SIGN_ES256), payload_ok());
    memmove(sig + 33, sig + 32, 32);
    sig[32] = 0;
    tok_end(&t, sig, 65);
    refused(F.es, &t, "bad signature");

    /* R = S = 0. */
    tok_begin(&t, hdr_of(SIGN_ES256), payload_ok());
    memset(sig, 0, 64);
    tok_end(&t, sig, 64);
    refused(F.es, &t, "bad signature");
}

/* ------------------------------------------------------------------------------------------
 * Claims
 * ------------------------------------------------------------------------------------------ */

static void test_sub(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;
    char payload[512], longest[DW_USER_ID_MAX + 2];

    (void)state;
    payload_refused("{\"exp\":1900000000}", "missing sub");
    payload_refused("{}", "missing sub");
    payload_refused("{\"sub\":42,\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":null,\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":[\"alice\"],\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":{\"id\":\"alice\"},\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"al ice\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"alice\\n\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"al\\u0001ice\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"alice\\u0000bob\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"al/ice\",\"exp\":1900000000}", "invalid sub");
    payload_refused("{\"sub\":\"\\u00e9lise\",\"exp\":1900000000}", "invalid sub");

    /* 128 bytes is the longest user id; 129 is refused. */
    memset(longest, 'u', DW_USER_ID_MAX);
    longest[DW_USER_ID_MAX] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1900000000}", longest);
    make_p(&t, SIGN_HS256, payload);
    verify_ok(F.hs, &t, &c);
    assert_string_equal(c.sub, longest);
    longest[DW_USER_ID_MAX] = 'u';
    longest[DW_USER_ID_MAX + 1] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":1900000000}", longest);
    payload_refused(payload, "invalid sub");
}

static void test_exp_required_and_typed(void **state)
{
    (void)state;
    payload_refused("{\"sub\":\"alice\"}", "missing exp");
    payload_refused("{\"sub\":\"alice\",\"nbf\":1700000000}", "missing exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":\"tomorrow\"}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":\"1900000000\"}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":true}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":null}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":[1900000000]}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":-1}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":-0.5}", "invalid exp");
    /* NaN is not JSON (dw_proto_parse_json refuses it); 1e400 is, and json-c makes it infinity. */
    payload_refused("{\"sub\":\"alice\",\"exp\":NaN}", "malformed payload");
    payload_refused("{\"sub\":\"alice\",\"exp\":1e400}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":1e300}", "invalid exp");
    /* json-c clamps integers that overflow: they must not become "never expires". */
    payload_refused("{\"sub\":\"alice\",\"exp\":9223372036854775807}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":99999999999999999999}", "invalid exp");
    payload_refused("{\"sub\":\"alice\",\"exp\":253402300800}", "invalid exp");

    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,\"nbf\":\"now\"}", "invalid nbf");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,\"nbf\":-5}", "invalid nbf");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,\"iat\":{}}", "invalid iat");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,\"iat\":NaN}", "malformed payload");
}

static void test_channels(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;
    char payload[DW_JWT_MAX_CHANNELS * 16 + 128], name[DW_CHANNEL_MAX + 2];
    size_t n;

    (void)state;
    /* Empty is fine. */
    make_p(&t, SIGN_HS256, "{\"sub\":\"alice\",\"exp\":1900000000,\"channels\":[]}");
    verify_ok(F.hs, &t, &c);
    assert_int_equal(c.n_channels, 0);

    /* 64 entries, kept in order. */
    n = (size_t)snprintf(payload, sizeof(payload),
                         "{\"sub\":\"alice\",\"exp\":1900000000,"
                         "\"channels\":[");
    for (int i = 0; i < DW_JWT_MAX_CHANNELS; i++)
        n += (size_t)snprintf(payload + n, sizeof(payload) - n, "%s\"ch%d\"", i ? "," : "", i);
    snprintf(payload + n, sizeof(payload) - n, "]}");
    make_p(&t, SIGN_HS256, payload);
    verify_ok(F.hs, &t, &c);
    assert_int_equal(c.n_channels, DW_JWT_MAX_CHANNELS);
    assert_string_equal(c.channels[0], "ch0");
    assert_string_equal(c.channels[DW_JWT_MAX_CHANNELS - 1], "ch63");

    /* 65 are refused, not cut short. */
    snprintf(payload + n, sizeof(payload) - n, ",\"one_more\"]}");
    payload_refused(payload, "too many channels");

    /* The longest channel name is kept whole; one longer is refused. */
    memset(name, 'c', DW_CHANNEL_MAX);
    name[DW_CHANNEL_MAX] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"%s\"]}",
             name);
    make_p(&t, SIGN_HS256, payload);
    verify_ok(F.hs, &t, &c);
    assert_string_equal(c.channels[0], name);
    name[DW_CHANNEL_MAX] = 'c';
    name[DW_CHANNEL_MAX + 1] = '\0';
    snprintf(payload, sizeof(payload), "{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"%s\"]}",
             name);
    payload_refused(payload, "invalid channels");

    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":\"vip\"}", "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":null}", "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":{\"vip\":1}}",
                    "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"vip\",7]}",
                    "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"vip\",[\"x\"]]}",
                    "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"\"]}", "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"v p\"]}",
                    "invalid channels");
    payload_refused("{\"sub\":\"a\",\"exp\":1900000000,\"channels\":[\"v\\u0000p\"]}",
                    "invalid channels");
}

/* ------------------------------------------------------------------------------------------
 * Strict parsing
 * ------------------------------------------------------------------------------------------ */

static void test_malformed_segments(void **state)
{
    struct tok t, good;
    char s[TOKEN_CAP];
    const char *p2;

    (void)state;
    make_p(&good, SIGN_HS256, payload_ok());
    p2 = strchr(good.s, '.') + 1;

    refused_str(F.hs, "", "malformed");
    refused_str(F.hs, "abc", "malformed");
    refused_str(F.hs, "..", "malformed");

    /* Two segments: the signature dropped. */
    snprintf(s, sizeof(s), "%.*s", (int)(strrchr(good.s, '.') - good.s), good.s);
    refused_str(F.hs, s, "malformed");
    /* Four segments. */
    t = good;
    append(&t, ".AAAA", 5);
    refused(F.hs, &t, "malformed");
    t = good;
    append(&t, ".", 1);
    refused(F.hs, &t, "malformed");
    /* Empty header or payload. */
    snprintf(s, sizeof(s), "%s", p2 - 1);
    refused_str(F.hs, s, "malformed");
    snprintf(s, sizeof(s), "%.*s%s", (int)(p2 - good.s), good.s, strchr(p2, '.'));
    refused_str(F.hs, s, "malformed");

    /* Bad base64url in each segment: a character outside the alphabet, padding, the standard
     * alphabet, whitespace. */
    t = good;
    t.s[3] = '*';
    refused(F.hs, &t, "malformed");
    t = good;
    t.s[(size_t)(p2 - good.s) + 2] = '!';
    refused(F.hs, &t, "malformed");
    t = good;
    t.s[t.len - 2] = '+';
    refused(F.hs, &t, "malformed");
    t = good;
    append(&t, "=", 1);
    refused(F.hs, &t, "malformed");
    t = good;
    append(&t, " ", 1);
    refused(F.hs, &t, "malformed");
    t = good;
    t.s[(size_t)(p2 - good.s) + 1] = '\0'; /* a NUL inside len */
    refused(F.hs, &t, "malformed");

    /* A padded segment: "{}" as "e30=". */
    snprintf(s, sizeof(s), "eyJhbGciOiJIUzI1NiJ9.e30=.AAAA");
    refused_str(F.hs, s, "malformed");
}

static void test_oversize(void **state)
{
    struct dw_jwt_claims c;
    struct tok t, last_ok;
    static char payload[DW_JWT_MAX_LEN];
    size_t pad;

    (void)state;
    /* Grow a valid token one padding byte at a time: it is accepted up to DW_JWT_MAX_LEN
     * bytes and refused as "token too long" from the first length past it. */
    last_ok.len = 0;
    for (pad = DW_JWT_MAX_LEN / 4 * 3 - 200;; pad++) {
        int n = snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld,\"pad\":\"",
                         (long long)EXP);

        memset(payload + n, 'x', pad);
        snprintf(payload + n + pad, sizeof(payload) - (size_t)n - pad, "\"}");
        make_p(&t, SIGN_HS256, payload);
        if (t.len > DW_JWT_MAX_LEN)
            break;
        last_ok = t;
    }
    assert_true(last_ok.len > DW_JWT_MAX_LEN - 4);
    verify_ok(F.hs, &last_ok, &c);
    refused(F.hs, &t, "token too long");

    /* Far too long, and not even a token. */
    memset(t.s, 'A', sizeof(t.s) - 1);
    t.len = sizeof(t.s) - 1;
    refused(F.hs, &t, "token too long");
}

static void test_header(void **state)
{
    struct tok t;
    char hdr[256];

    (void)state;
    make(&t, SIGN_HS256, "[\"HS256\"]", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "\"HS256\"", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "null", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\"", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\"}x", payload_ok());
    refused(F.hs, &t, "malformed header");
    make(&t, SIGN_HS256, "{'alg':'HS256'}", payload_ok());
    refused(F.hs, &t, "malformed header");

    /* Too deep. */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"HS256\",\"x\":%s%s}", "[[[[[[[[[[[[[[[[[[[[",
             "]]]]]]]]]]]]]]]]]]]]");
    make(&t, SIGN_HS256, hdr, payload_ok());
    refused(F.hs, &t, "malformed header");

    /* typ, when present, is "JWT". */
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\",\"typ\":\"JWE\"}", payload_ok());
    refused(F.hs, &t, "unsupported typ");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}", payload_ok());
    refused(F.hs, &t, "unsupported typ");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\",\"typ\":1}", payload_ok());
    refused(F.hs, &t, "unsupported typ");

    /* Extensions we cannot honour. */
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", payload_ok());
    refused(F.hs, &t, "unsupported crit");
    make(&t, SIGN_HS256, "{\"alg\":\"HS256\",\"b64\":false,\"crit\":[\"b64\"]}", payload_ok());
    refused(F.hs, &t, "unsupported crit");
}

static void test_payload(void **state)
{
    (void)state;
    /* Properly signed, so only the payload's shape is at fault. */
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000", "malformed payload");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000}}", "malformed payload");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,}", "malformed payload");
    payload_refused("{sub:\"alice\"}", "malformed payload");
    payload_refused("[{\"sub\":\"alice\",\"exp\":1900000000}]", "malformed payload");
    payload_refused("\"alice\"", "malformed payload");
    payload_refused("null", "malformed payload");
    payload_refused("", "malformed");
    payload_refused("{\"sub\":\"alice\",\"exp\":1900000000,\"x\":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]"
                    "]]]]]]]]]]}",
                    "malformed payload");
}

/* ------------------------------------------------------------------------------------------
 * Making verifiers
 * ------------------------------------------------------------------------------------------ */

/* dw_jwt_verifier_new_pem(path) fails with a message naming path that contains want and, when
 * not NULL, want2. */
static void pem_refused(const char *path, const char *want, const char *want2)
{
    char err[512] = "";
    struct dw_jwt_verifier *v = dw_jwt_verifier_new_pem(path, err, sizeof(err));

    if (v) {
        dw_jwt_verifier_free(v);
        fail_msg("%s: accepted, want \"%s\"", path, want);
    }
    if (!strstr(err, path) || !strstr(err, want) || (want2 && !strstr(err, want2)))
        fail_msg("%s: message \"%s\", want \"%s\" and \"%s\"", path, err, want, want2 ? want2 : "");
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_pem_errors(void **state)
{
    char path[128];
    EVP_PKEY *k;

    (void)state;
    path_in_dir(path, sizeof(path), "missing.pem");
    pem_refused(path, "No such file", NULL);
    pem_refused(F.dir, "PUBLIC KEY", NULL); /* a directory: fopen works, reading does not */

    write_text("empty.pem", "", path, sizeof(path));
    pem_refused(path, "no PEM public key", NULL);
    write_text("text.pem", "this is not a key\n", path, sizeof(path));
    pem_refused(path, "no PEM public key", NULL);
    write_text("garbage.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", path,
               sizeof(path));
    pem_refused(path, "no PEM public key", NULL);

    /* A private key is not taken for its public half: say how to make that. */
    write_pem("ec_private.pem", F.ec, true, path, sizeof(path));
    pem_refused(path, "no PEM public key", "-pubout");

    k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(k);
    write_pem("ed25519.pem", k, false, path, sizeof(path));
    pem_refused(path, "ED25519 keys are not supported", "RSA");
    EVP_PKEY_free(k);

    k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    assert_non_null(k);
    write_pem("p384.pem", k, false, path, sizeof(path));
    pem_refused(path, "secp384r1", "P-256");
    EVP_PKEY_free(k);

    k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    assert_non_null(k);
    write_pem("rsa1024.pem", k, false, path, sizeof(path));
    pem_refused(path, "1024 bits", "2048");
    EVP_PKEY_free(k);

    /* err may be NULL or empty. */
    assert_null(dw_jwt_verifier_new_pem(path, NULL, 0));
    assert_null(dw_jwt_verifier_new_pem(NULL, NULL, 0));
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_hs256_secret(void **state)
{
    unsigned char secret[DW_JWT_MIN_SECRET] = {0};
    struct dw_jwt_verifier *v;
    char err[256] = "";

    (void)state;
    v = dw_jwt_verifier_new_hs256(secret, sizeof(secret) - 1, err, sizeof(err));
    assert_null(v);
    assert_non_null(strstr(err, "31 bytes"));
    assert_non_null(strstr(err, "32"));
    err[0] = '\0';
    assert_null(dw_jwt_verifier_new_hs256(secret, 0, err, sizeof(err)));
    assert_non_null(strstr(err, "0 bytes"));
    assert_null(dw_jwt_verifier_new_hs256(NULL, 64, err, sizeof(err)));

    v = dw_jwt_verifier_new_hs256(secret, sizeof(secret), err, sizeof(err));
    assert_non_null(v);
    assert_string_equal(dw_jwt_verifier_alg(v), "HS256");
    dw_jwt_verifier_free(v);
    dw_jwt_verifier_free(NULL);
}

static void test_bad_arguments(void **state)
{
    struct dw_jwt_claims c;
    struct tok t;
    const char *why;

    (void)state;
    make_p(&t, SIGN_HS256, payload_ok());
    why = NULL;
    assert_int_equal(dw_jwt_verify(NULL, t.s, t.len, NOW, 0, &c, &why), -EINVAL);
    assert_string_equal(why, "invalid argument");
    assert_int_equal(dw_jwt_verify(F.hs, NULL, 0, NOW, 0, &c, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, NOW, 0, NULL, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, NOW, 0, &c, NULL), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, NOW, -1, &c, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, -1, 0, &c, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, INT64_MAX, 0, &c, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, NOW, INT64_MAX, &c, &why), -EINVAL);
    assert_int_equal(dw_jwt_verify(F.hs, t.s, t.len, NOW, DW_JWT_TIME_MAX, &c, &why), 0);
}

/* ------------------------------------------------------------------------------------------
 * Concurrency
 * ------------------------------------------------------------------------------------------ */

#define N_THREADS 4
#define N_ROUNDS  60

static struct tok conc_good[3], conc_bad[3];
static const struct dw_jwt_verifier *conc_v[3];

/* Counts into *arg (a long of its own) the verifications that went wrong. */
static void *verify_loop(void *arg)
{
    long bad = 0;

    for (int round = 0; round < N_ROUNDS; round++) {
        for (int i = 0; i < 3; i++) {
            struct dw_jwt_claims c;
            const char *why;

            if (dw_jwt_verify(conc_v[i], conc_good[i].s, conc_good[i].len, NOW, 0, &c, &why) != 0 ||
                strcmp(c.sub, "alice") != 0)
                bad++;
            if (dw_jwt_verify(conc_v[i], conc_bad[i].s, conc_bad[i].len, NOW, 0, &c, &why) !=
                    -EPERM ||
                strcmp(why, "bad signature") != 0 || ERR_peek_error() != 0)
                bad++;
        }
    }
    *(long *)arg = bad;
    return NULL;
}

static void test_concurrent_verify(void **state)
{
    pthread_t th[N_THREADS];
    long bad[N_THREADS];
    const enum signer how[3] = {SIGN_HS256, SIGN_RS256, SIGN_ES256};

    (void)state;
    conc_v[0] = F.hs;
    conc_v[1] = F.rs;
    conc_v[2] = F.es;
    for (int i = 0; i < 3; i++) {
        make_p(&conc_good[i], how[i], payload_ok());
        make_flipped(&conc_bad[i], how[i], 7);
    }
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verify_loop, &bad[i]), 0);
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(bad[i], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_decode),
        cmocka_unit_test(test_verifier_algs),
        cmocka_unit_test(test_valid_hs256),
        cmocka_unit_test(test_valid_rs256),
        cmocka_unit_test(test_valid_es256),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_fractional_times),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_key_confusion),
        cmocka_unit_test(test_alg_mismatch),
        cmocka_unit_test(test_es256_signature_length),
        cmocka_unit_test(test_sub),
        cmocka_unit_test(test_exp_required_and_typed),
        cmocka_unit_test(test_channels),
        cmocka_unit_test(test_malformed_segments),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_payload),
        cmocka_unit_test(test_pem_errors),
        cmocka_unit_test(test_hs256_secret),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_concurrent_verify),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
