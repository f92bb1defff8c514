/*
 * test_auth — the connection and operator policy (auth.h) built the way the daemon builds it:
 * dw_config_load on an argv, then dw_auth_new. The config is destroyed right after
 * dw_auth_new, so a policy that kept a pointer into it fails under ASan. Covered: the dev mode
 * (no key), HS256 tokens signed here with OpenSSL's HMAC() and checked with the configured
 * leeway, RS256 and ES256 from key files made at start-up (the algorithm follows the key),
 * the key file errors an operator sees, where a token is found (Authorization, the
 * Sec-WebSocket-Protocol entry), the allowed origins (exact matches only), the operator token
 * (right, wrong, shorter, longer, badly framed), and concurrent use (meaningful under TSan).
 */
#include "dealwire/auth.h"
#include "dealwire/config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "test_util.h"

/* 2027-01-15T08:00:00Z; tokens expire ten minutes later unless a test says otherwise. */
#define NOW INT64_C(1800000000)
#define EXP (NOW + 600)

#define SECRET       "an HS256 secret of more than 32 bytes, for tests only"
#define OTHER_SECRET "another HS256 secret of more than 32 bytes, not the one"
#define API_TOKEN    "operator-token-0123456789abcdef"

#define TOKEN_CAP 4096

/* ------------------------------------------------------------------------------------------
 * Fixture: key files made once for the group
 * ------------------------------------------------------------------------------------------ */

static struct {
    char dir[64];
    EVP_PKEY *rsa, *ec;
    char rsa_path[128], ec_path[128], junk_path[128], missing_path[128];
} F;

static void write_pem(EVP_PKEY *pkey, const char *name, char *path, size_t cap)
{
    FILE *f;

    snprintf(path, cap, "%s/%s", F.dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, pkey), 1);
    assert_int_equal(fclose(f), 0);
}

static int group_setup(void **state)
{
    FILE *f;

    (void)state;
    snprintf(F.dir, sizeof(F.dir), "/tmp/dw_test_auth_XXXXXX");
    if (!mkdtemp(F.dir))
        return -1;
    F.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    F.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!F.rsa || !F.ec)
        return -1;
    write_pem(F.rsa, "rsa.pem", F.rsa_path, sizeof(F.rsa_path));
    write_pem(F.ec, "ec.pem", F.ec_path, sizeof(F.ec_path));
    snprintf(F.junk_path, sizeof(F.junk_path), "%s/junk.pem", F.dir);
    f = fopen(F.junk_path, "w");
    if (!f || fputs("not a key\n", f) < 0 || fclose(f) != 0)
        return -1;
    snprintf(F.missing_path, sizeof(F.missing_path), "%s/missing.pem", F.dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(F.rsa);
    EVP_PKEY_free(F.ec);
    unlink(F.rsa_path);
    unlink(F.ec_path);
    unlink(F.junk_path);
    return rmdir(F.dir);
}

/* ------------------------------------------------------------------------------------------
 * Building the policy as the daemon does
 * ------------------------------------------------------------------------------------------ */

/* dw_auth_new on the config that args (NULL-terminated, flags only) load; the config is gone
 * when this returns. NULL when dw_auth_new refused; *err_text (when not NULL) then holds what
 * it printed (the caller frees it). */
static struct dw_auth *auth_from(const char *const *args, char **err_text)
{
    char *argv[32] = {"dealwire"}, *envp[] = {NULL};
    struct dw_config cfg;
    struct dw_auth *a;
    size_t err_len = 0;
    char *text = NULL;
    FILE *err = open_memstream(&text, &err_len);
    int argc = 1;

    assert_non_null(err);
    for (; args && args[argc - 1]; argc++) {
        assert_true(argc < 31);
        argv[argc] = (char *)args[argc - 1];
    }
    if (dw_config_load(&cfg, argc, argv, envp, stdout, stderr) != 0)
        fail_msg("the config did not load (%s ...)", argc > 1 ? argv[1] : "no flags");
    a = dw_auth_new(&cfg, err);
    dw_config_destroy(&cfg);
    assert_int_equal(fclose(err), 0);
    if (err_text)
        *err_text = text;
    else
        free(text);
    return a;
}

static struct dw_auth *auth_ok(const char *const *args)
{
    char *text = NULL;
    struct dw_auth *a = auth_from(args, &text);

    if (!a)
        fail_msg("dw_auth_new refused: %s", text ? text : "");
    assert_string_equal(text, ""); /* nothing said on success */
    free(text);
    return a;
}

/* ------------------------------------------------------------------------------------------
 * Tokens (test only): a different base64 path (EVP_EncodeBlock) and HMAC() than src/jwt.c
 * ------------------------------------------------------------------------------------------ */

enum signer { SIGN_HS256, SIGN_HS256_OTHER, SIGN_RS256, SIGN_ES256 };

struct tok {
    char s[TOKEN_CAP];
    size_t len;
};

static void append_b64url(struct tok *t, const void *in, size_t len)
{
    unsigned char enc[TOKEN_CAP];
    int n;

    assert_true(len < TOKEN_CAP / 2);
    n = EVP_EncodeBlock(enc, in, (int)len);
    assert_true(n >= 0);
    while (n > 0 && enc[n - 1] == '=')
        n--;
    assert_true(t->len + (size_t)n < TOKEN_CAP);
    for (int i = 0; i < n; i++)
        t->s[t->len++] = (char)(enc[i] == '+' ? '-' : enc[i] == '/' ? '_' : enc[i]);
    t->s[t->len] = '\0';
}

static size_t digest_sign(EVP_PKEY *pkey, const struct tok *t, unsigned char *sig, size_t cap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = cap;

    assert_non_null(ctx);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey), 1);
    assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const unsigned char *)t->s, t->len), 1);
    EVP_MD_CTX_free(ctx);
    return n;
}

/* The JWS signature of t's first two segments, as how signs them; returns its length. */
static size_t sign(enum signer how, const struct tok *t, unsigned char sig[512])
{
    const char *key = how == SIGN_HS256 ? SECRET : OTHER_SECRET;
    unsigned char der[128];
    const unsigned char *p = der;
    const BIGNUM *r, *s;
    unsigned int n = 0;
    ECDSA_SIG *es;

    switch (how) {
    case SIGN_HS256:
    case SIGN_HS256_OTHER:
        assert_non_null(HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)t->s,
                             t->len, sig, &n));
        return n;
    case SIGN_RS256:
        return digest_sign(F.rsa, t, sig, 512);
    case SIGN_ES256:
        /* JWS wants R || S, not the DER OpenSSL makes. */
        es = d2i_ECDSA_SIG(NULL, &p, (long)digest_sign(F.ec, t, der, sizeof(der)));
        assert_non_null(es);
        ECDSA_SIG_get0(es, &r, &s);
        assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
        assert_int_equal(BN_bn2binpad(s, sig + 32, 32), 32);
        ECDSA_SIG_free(es);
        return 64;
    }
    fail();
    return 0;
}

/* t = a token with header alg and payload, signed as how says. */
static void make_token(struct tok *t, enum signer how, const char *alg, const char *payload)
{
    unsigned char sig[512];
    char hdr[64];
    size_t n;

    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    t->len = 0;
    append_b64url(t, hdr, strlen(hdr));
    t->s[t->len++] = '.';
    append_b64url(t, payload, strlen(payload));
    n = sign(how, t, sig);
    t->s[t->len++] = '.';
    append_b64url(t, sig, n);
}

/* An HS256 token for sub that expires at exp, signed with SECRET. */
static void hs_token(struct tok *t, const char *sub, int64_t exp)
{
    char payload[256];

    snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":%lld}", sub, (long long)exp);
    make_token(t, SIGN_HS256, "HS256", payload);
}

static void verify_ok(const struct dw_auth *a, const char *token, size_t len, int64_t now,
                      struct dw_jwt_claims *c)
{
    const char *why = "unset";

    if (dw_auth_verify(a, token, len, now, c, &why) != 0)
        fail_msg("token refused: %s", why ? why : "?");
}

static void verify_refused(const struct dw_auth *a, const struct tok *t, int64_t now,
                           const char *reason)
{
    struct dw_jwt_claims c;
    const char *why = NULL;

    assert_int_equal(dw_auth_verify(a, t->s, t->len, now, &c, &why), -1);
    assert_non_null(why);
    assert_string_equal(why, reason);
}

/* ------------------------------------------------------------------------------------------
 * Tests: modes and tokens
 * ------------------------------------------------------------------------------------------ */

/* No flags: dev mode, any origin, open operator API. */
static void test_defaults_are_open(void **state)
{
    struct dw_auth *a = auth_ok(NULL);
    struct dw_jwt_claims c;
    const char *why = NULL;
    struct tok t;

    (void)state;
    assert_false(dw_auth_jwt_required(a));
    assert_string_equal(dw_auth_mode(a), "off");
    assert_int_equal(dw_auth_leeway(a), 30); /* --jwt-leeway's default */
    /* Even a well-signed token is not verified: there is no key. */
    hs_token(&t, "alice", EXP);
    assert_int_equal(dw_auth_verify(a, t.s, t.len, NOW, &c, &why), -1);
    assert_string_equal(why, "authentication is off");

    assert_false(dw_auth_origins_enforced(a));
    assert_true(dw_auth_origin_allowed(a, "https://anything.example"));
    assert_true(dw_auth_origin_allowed(a, "null"));
    assert_true(dw_auth_origin_allowed(a, NULL));

    assert_false(dw_auth_api_token_set(a));
    assert_true(dw_auth_api_allowed(a, NULL));
    assert_true(dw_auth_api_allowed(a, "Basic whatever"));
    dw_auth_free(a);
    dw_auth_free(NULL);
}

static void test_hs256_accepts_its_tokens(void **state)
{
    const char *args[] = {"--jwt-secret", SECRET, NULL};
    struct dw_auth *a = auth_ok(args);
    struct dw_jwt_claims c;
    const char *why = NULL;
    struct tok t;

    (void)state;
    assert_true(dw_auth_jwt_required(a));
    assert_string_equal(dw_auth_mode(a), "HS256");
    hs_token(&t, "alice", EXP);
    verify_ok(a, t.s, t.len, NOW, &c);
    assert_string_equal(c.sub, "alice");
    assert_int_equal(c.exp, EXP);
    assert_int_equal(c.n_channels, 0);

    make_token(&t, SIGN_HS256, "HS256",
               "{\"sub\":\"bob@x\",\"exp\":1800000600,\"channels\":[\"private-a\",\"user:bob\"]}");
    verify_ok(a, t.s, t.len, NOW, &c);
    assert_string_equal(c.sub, "bob@x");
    assert_int_equal(c.n_channels, 2);
    assert_string_equal(c.channels[0], "private-a");
    assert_string_equal(c.channels[1], "user:bob");

    /* len bounds the token: one byte more is another token, which does not verify. */
    hs_token(&t, "alice", EXP);
    t.s[t.len] = 'A';
    assert_int_equal(dw_auth_verify(a, t.s, t.len + 1, NOW, &c, &why), -1);
    assert_non_null(why);
    verify_ok(a, t.s, t.len, NOW, &c);
    dw_auth_free(a);
}

static void test_hs256_refusals(void **state)
{
    const char *args[] = {"--jwt-secret", SECRET, NULL};
    struct dw_auth *a = auth_ok(args);
    struct tok t, forged;

    (void)state;
    make_token(&t, SIGN_HS256_OTHER, "HS256", "{\"sub\":\"alice\",\"exp\":1800000600}");
    verify_refused(a, &t, NOW, "bad signature");
    make_token(&t, SIGN_HS256, "RS256", "{\"sub\":\"alice\",\"exp\":1800000600}");
    verify_refused(a, &t, NOW, "algorithm mismatch");
    make_token(&t, SIGN_HS256, "none", "{\"sub\":\"alice\",\"exp\":1800000600}");
    verify_refused(a, &t, NOW, "algorithm mismatch");
    make_token(&t, SIGN_HS256, "HS256", "{\"sub\":\"alice\"}");
    verify_refused(a, &t, NOW, "missing exp");
    make_token(&t, SIGN_HS256, "HS256", "{\"exp\":1800000600}");
    verify_refused(a, &t, NOW, "missing sub");
    make_token(&t, SIGN_HS256, "HS256", "{\"sub\":\"a b\",\"exp\":1800000600}");
    verify_refused(a, &t, NOW, "invalid sub");
    /* Another payload under the original signature: a user who edits "sub" gets nothing. */
    hs_token(&t, "alice", EXP);
    hs_token(&forged, "mallory", EXP);
    memcpy(strrchr(forged.s, '.'), strrchr(t.s, '.'), strlen(strrchr(t.s, '.')) + 1);
    forged.len = strlen(forged.s);
    verify_refused(a, &forged, NOW, "bad signature");
    dw_auth_free(a);
}

/* exp and nbf are judged with --jwt-leeway, whatever its value. */
static void test_leeway_comes_from_the_config(void **state)
{
    const char *five[] = {"--jwt-secret", SECRET, "--jwt-leeway", "5", NULL};
    const char *none[] = {"--jwt-secret", SECRET, "--jwt-leeway", "0", NULL};
    struct dw_auth *a = auth_ok(five), *strict = auth_ok(none);
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    assert_int_equal(dw_auth_leeway(a), 5);
    assert_int_equal(dw_auth_leeway(strict), 0);

    hs_token(&t, "alice", NOW - 4); /* expired 4 s ago: within 5 s of leeway */
    verify_ok(a, t.s, t.len, NOW, &c);
    verify_refused(strict, &t, NOW, "expired");
    hs_token(&t, "alice", NOW - 5); /* now >= exp + leeway */
    verify_refused(a, &t, NOW, "expired");
    hs_token(&t, "alice", NOW + 1);
    verify_ok(strict, t.s, t.len, NOW, &c);
    verify_refused(strict, &t, NOW + 1, "expired");

    make_token(&t, SIGN_HS256, "HS256",
               "{\"sub\":\"alice\",\"exp\":1800000600,\"nbf\":1800000005}");
    verify_ok(a, t.s, t.len, NOW, &c); /* valid from 5 s ahead: within the leeway */
    verify_refused(strict, &t, NOW, "not yet valid");
    verify_refused(a, &t, NOW - 1, "not yet valid");
    dw_auth_free(a);
    dw_auth_free(strict);
}

/* --jwt-public-key: the algorithm follows the key in the file. */
static void test_public_key_modes(void **state)
{
    const char *rs_args[] = {"--jwt-public-key", F.rsa_path, NULL};
    const char *es_args[] = {"--jwt-public-key", F.ec_path, NULL};
    const char *payload = "{\"sub\":\"carol\",\"exp\":1800000600}";
    struct dw_auth *rs = auth_ok(rs_args), *es = auth_ok(es_args);
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    assert_true(dw_auth_jwt_required(rs));
    assert_string_equal(dw_auth_mode(rs), "RS256");
    assert_true(dw_auth_jwt_required(es));
    assert_string_equal(dw_auth_mode(es), "ES256");

    make_token(&t, SIGN_RS256, "RS256", payload);
    verify_ok(rs, t.s, t.len, NOW, &c);
    assert_string_equal(c.sub, "carol");
    verify_refused(es, &t, NOW, "algorithm mismatch");

    make_token(&t, SIGN_ES256, "ES256", payload);
    verify_ok(es, t.s, t.len, NOW, &c);
    assert_string_equal(c.sub, "carol");
    verify_refused(rs, &t, NOW, "algorithm mismatch");

    /* An HS256 token never passes a public-key policy. */
    make_token(&t, SIGN_HS256, "HS256", payload);
    verify_refused(rs, &t, NOW, "algorithm mismatch");
    verify_refused(es, &t, NOW, "algorithm mismatch");
    dw_auth_free(rs);
    dw_auth_free(es);
}

/* A key file that does not load: NULL, and one line naming the flag (the daemon exits 2). */
static void test_key_file_errors(void **state)
{
    const char *missing[] = {"--jwt-public-key", F.missing_path, NULL};
    const char *junk[] = {"--jwt-public-key", F.junk_path, NULL};
    const char *const *cases[] = {missing, junk};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = NULL;
        struct dw_auth *a = auth_from(cases[i], &text);
        const char *nl;

        assert_null(a);
        assert_non_null(text);
        if (strncmp(text, "dealwire: --jwt-public-key: ", 28) != 0)
            fail_msg("unexpected error line: %s", text);
        nl = strchr(text, '\n');
        assert_non_null(nl);
        assert_int_equal(nl[1], '\0'); /* one line */
        assert_true(nl - text > 28);   /* and it says something */
        free(text);
    }
}

/* The token as the upgrade finds it: in Authorization, or in Sec-WebSocket-Protocol. */
static void test_token_carriers_then_verify(void **state)
{
    const char *args[] = {"--jwt-secret", SECRET, NULL};
    struct dw_auth *a = auth_ok(args);
    char header[TOKEN_CAP + 64];
    struct dw_jwt_claims c;
    const char *token;
    size_t len;
    struct tok t;

    (void)state;
    hs_token(&t, "dave", EXP);
    snprintf(header, sizeof(header), "Bearer %s", t.s);
    assert_true(dw_auth_bearer(header, &token, &len));
    assert_int_equal(len, t.len);
    verify_ok(a, token, len, NOW, &c);
    assert_string_equal(c.sub, "dave");

    snprintf(header, sizeof(header), "dealwire, bearer.%s", t.s);
    assert_true(dw_auth_protocol_token(header, &token, &len));
    assert_int_equal(len, t.len);
    assert_memory_equal(token, t.s, len);
    verify_ok(a, token, len, NOW, &c);
    assert_string_equal(c.sub, "dave");
    dw_auth_free(a);
}

/* ------------------------------------------------------------------------------------------
 * Tests: header parsing
 * ------------------------------------------------------------------------------------------ */

static void expect_bearer(const char *value, size_t offset, size_t len)
{
    const char *token = NULL;
    size_t n = 0;

    if (!dw_auth_bearer(value, &token, &n))
        fail_msg("\"%s\" refused", value);
    assert_ptr_equal(token, value + offset);
    assert_int_equal(n, len);
}

static void test_bearer(void **state)
{
    static const char *const refused[] = {
        "",    "Bearer",     "Bearer ",     "Bearer    ", "Bearer\tabc", "Bearerabc", "Basic abc",
        "abc", "Bearer a b", "Bearer abc ", "Bearer a\t", " Bearer abc", "Bear abc",  "Token abc",
    };
    const char *token = "untouched";
    size_t len = 99;

    (void)state;
    expect_bearer("Bearer abc", 7, 3);
    expect_bearer("bearer abc", 7, 3);
    expect_bearer("BEARER abc", 7, 3);
    expect_bearer("Bearer    abc", 10, 3);
    expect_bearer("Bearer a.b-c_d", 7, 7);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (dw_auth_bearer(refused[i], &token, &len))
            fail_msg("\"%s\" accepted", refused[i]);
    }
    assert_false(dw_auth_bearer(NULL, &token, &len));
    assert_string_equal(token, "untouched");
}

static void expect_protocol_token(const char *value, const char *want)
{
    const char *token = NULL;
    size_t len = 0;

    if (!dw_auth_protocol_token(value, &token, &len))
        fail_msg("no token found in \"%s\"", value);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(token, want, len);
    assert_true(token >= value && token + len <= value + strlen(value)); /* borrowed */
}

static void test_protocol_token(void **state)
{
    static const char *const none[] = {
        "",     "dealwire",        "bearer.", "dealwire, bearer.", "xbearer.abc", "Bearer.abc",
        ", ,,", "dealwire,bearer", "bearer",
    };
    const char *token;
    size_t len;

    (void)state;
    expect_protocol_token("bearer.abc", "abc");
    expect_protocol_token("dealwire, bearer.abc", "abc");
    expect_protocol_token("dealwire,bearer.abc", "abc");
    expect_protocol_token("bearer.abc, dealwire", "abc");
    expect_protocol_token("dealwire, bearer.x.y-z_w", "x.y-z_w");
    expect_protocol_token("bearer.first, bearer.second", "first");
    expect_protocol_token("  ,  bearer.t  , dealwire", "t");
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        if (dw_auth_protocol_token(none[i], &token, &len))
            fail_msg("a token found in \"%s\"", none[i]);
    }
    assert_false(dw_auth_protocol_token(NULL, &token, &len));
}

/* ------------------------------------------------------------------------------------------
 * Tests: origins and the operator token
 * ------------------------------------------------------------------------------------------ */

static void test_origins_are_exact(void **state)
{
    const char *args[] = {"--allowed-origins",
                          "https://app.example.com, http://localhost:3000,http://[::1]:8080", NULL};
    static const char *const refused[] = {
        "https://evil.example",
        "https://app.example.com/",
        "https://app.example.com:443",
        "http://app.example.com",
        "https://APP.example.com",
        "https://app.example.co",
        "https://app.example.com.evil.example",
        "https://sub.app.example.com",
        " https://app.example.com",
        "http://localhost:3000 ",
        "http://localhost",
        "null",
        "",
    };
    struct dw_auth *a = auth_ok(args);

    (void)state;
    assert_true(dw_auth_origins_enforced(a));
    assert_true(dw_auth_origin_allowed(a, "https://app.example.com"));
    assert_true(dw_auth_origin_allowed(a, "http://localhost:3000")); /* spaces trimmed */
    assert_true(dw_auth_origin_allowed(a, "http://[::1]:8080"));
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (dw_auth_origin_allowed(a, refused[i]))
            fail_msg("origin \"%s\" allowed", refused[i]);
    }
    /* No Origin: not a browser, which always sends one on an upgrade. */
    assert_true(dw_auth_origin_allowed(a, NULL));
    /* Origins are about browsers only: JWT and the operator API stay off. */
    assert_false(dw_auth_jwt_required(a));
    assert_false(dw_auth_api_token_set(a));
    dw_auth_free(a);
}

static void test_one_origin(void **state)
{
    const char *args[] = {"--allowed-origins", "https://only.example", NULL};
    struct dw_auth *a = auth_ok(args);

    (void)state;
    assert_true(dw_auth_origins_enforced(a));
    assert_true(dw_auth_origin_allowed(a, "https://only.example"));
    assert_false(dw_auth_origin_allowed(a, "http://only.example"));
    assert_false(dw_auth_origin_allowed(a, "https://only.example.evil"));
    dw_auth_free(a);
}

static void test_api_token(void **state)
{
    const char *args[] = {"--api-token", API_TOKEN, NULL};
    static const char *const refused[] = {
        "Bearer operator-token-0123456789abcde",   /* shorter by one */
        "Bearer operator-token-0123456789abcdeff", /* longer by one */
        "Bearer operator-token-0123456789abcdeF",  /* same length, last byte differs */
        "Bearer Operator-token-0123456789abcdef",  /* same length, first byte differs */
        "Bearer operator-token",                   /* a prefix */
        ("Bearer " API_TOKEN " "),                 /* trailing space */
        ("Bearer " API_TOKEN "\t"),
        ("Bearer " API_TOKEN " x"),
        ("Basic " API_TOKEN),
        API_TOKEN,
        "Bearer",
        "Bearer ",
        "",
    };
    struct dw_auth *a = auth_ok(args);

    (void)state;
    assert_true(dw_auth_api_token_set(a));
    assert_true(dw_auth_api_allowed(a, "Bearer " API_TOKEN));
    assert_true(dw_auth_api_allowed(a, "bearer " API_TOKEN));
    assert_true(dw_auth_api_allowed(a, "Bearer   " API_TOKEN));
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (dw_auth_api_allowed(a, refused[i]))
            fail_msg("\"%s\" allowed", refused[i]);
    }
    assert_false(dw_auth_api_allowed(a, NULL));
    /* The operator token is not a WebSocket credential. */
    assert_false(dw_auth_jwt_required(a));
    assert_string_equal(dw_auth_mode(a), "off");
    dw_auth_free(a);
}

/* Everything at once: each setting keeps its own effect. */
static void test_all_settings_together(void **state)
{
    const char *args[] = {"--jwt-secret",
                          SECRET,
                          "--jwt-leeway",
                          "7",
                          "--api-token",
                          API_TOKEN,
                          "--allowed-origins",
                          "https://app.example.com",
                          NULL};
    struct dw_auth *a = auth_ok(args);
    struct dw_jwt_claims c;
    struct tok t;

    (void)state;
    assert_string_equal(dw_auth_mode(a), "HS256");
    assert_int_equal(dw_auth_leeway(a), 7);
    hs_token(&t, "erin", EXP);
    verify_ok(a, t.s, t.len, NOW, &c);
    assert_false(dw_auth_api_allowed(a, "Bearer " SECRET)); /* the JWT secret is not it */
    assert_true(dw_auth_api_allowed(a, "Bearer " API_TOKEN));
    assert_true(dw_auth_origin_allowed(a, "https://app.example.com"));
    assert_false(dw_auth_origin_allowed(a, "https://other.example.com"));
    dw_auth_free(a);
}

/* ------------------------------------------------------------------------------------------
 * Concurrency: one policy, several threads (auth.h: any thread may use it)
 * ------------------------------------------------------------------------------------------ */

#define THREADS 4
#define ROUNDS  200

struct worker_arg {
    const struct dw_auth *a;
    const struct tok *good, *bad;
    int failures;
};

static void *hammer(void *p)
{
    struct worker_arg *w = p;
    struct dw_jwt_claims c;
    const char *why;

    for (int i = 0; i < ROUNDS; i++) {
        if (dw_auth_verify(w->a, w->good->s, w->good->len, NOW, &c, &why) != 0 ||
            strcmp(c.sub, "alice") != 0)
            w->failures++;
        if (dw_auth_verify(w->a, w->bad->s, w->bad->len, NOW, &c, &why) == 0)
            w->failures++;
        if (!dw_auth_api_allowed(w->a, "Bearer " API_TOKEN) ||
            dw_auth_api_allowed(w->a, "Bearer " SECRET))
            w->failures++;
        if (!dw_auth_origin_allowed(w->a, "https://app.example.com") ||
            dw_auth_origin_allowed(w->a, "https://evil.example"))
            w->failures++;
    }
    return NULL;
}

static void test_concurrent_use(void **state)
{
    const char *args[] = {"--jwt-secret",
                          SECRET,
                          "--api-token",
                          API_TOKEN,
                          "--allowed-origins",
                          "https://app.example.com",
                          NULL};
    struct dw_auth *a = auth_ok(args);
    struct worker_arg w[THREADS];
    pthread_t th[THREADS];
    struct tok good, bad;

    (void)state;
    hs_token(&good, "alice", EXP);
    make_token(&bad, SIGN_HS256_OTHER, "HS256", "{\"sub\":\"alice\",\"exp\":1800000600}");
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker_arg){.a = a, .good = &good, .bad = &bad};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    dw_auth_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_open),
        cmocka_unit_test(test_hs256_accepts_its_tokens),
        cmocka_unit_test(test_hs256_refusals),
        cmocka_unit_test(test_leeway_comes_from_the_config),
        cmocka_unit_test(test_public_key_modes),
        cmocka_unit_test(test_key_file_errors),
        cmocka_unit_test(test_token_carriers_then_verify),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_protocol_token),
        cmocka_unit_test(test_origins_are_exact),
        cmocka_unit_test(test_one_origin),
        cmocka_unit_test(test_api_token),
        cmocka_unit_test(test_all_settings_together),
        cmocka_unit_test(test_concurrent_use),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
