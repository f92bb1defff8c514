/*
 * jwt — DESIGN: a token is untrusted input, checked in an order that exposes as little as
 * possible before the signature is known good: bounded length, three strict base64url
 * segments, a header whose "alg" must equal the one algorithm the verifier was made for, the
 * signature over the segments as sent, and only then the payload's JSON and claims. The
 * algorithm never comes from the token, so "none" and HS256-signed-with-the-public-key (key
 * confusion) fail at the "alg" check, whatever the signature holds.
 *
 * Threads: a verifier is written only by its constructor. Each dw_jwt_verify call makes its own
 * EVP_MAC_CTX or EVP_MD_CTX around the shared, refcounted EVP_MAC / EVP_PKEY, which OpenSSL 3
 * allows from several threads at once. A refused token leaves nothing on the calling thread's
 * OpenSSL error queue: on the I/O thread a stale entry would make a later SSL_get_error()
 * report a TLS failure for an unrelated connection.
 */
#define DW_LOG_MODULE "jwt"
#include "dealwire/jwt.h"
#include "dealwire/mem.h"
#include "dealwire/proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>

/* A header or payload nested deeper than this is refused (claims are one or two levels). */
#define PARSE_DEPTH 16
/* Bytes in an HS256 MAC, and in an ES256 signature (R and S, 32 bytes each, big-endian). */
#define HS256_LEN 32
#define ES256_LEN 64

enum alg {
    ALG_HS256,
    ALG_RS256,
    ALG_ES256,
};

static const char *const alg_names[] = {
    [ALG_HS256] = "HS256",
    [ALG_RS256] = "RS256",
    [ALG_ES256] = "ES256",
};

struct dw_jwt_verifier {
    enum alg alg;
    EVP_MAC *mac;          /* HS256: HMAC, fetched once */
    unsigned char *secret; /* HS256: a copy, wiped on free */
    size_t secret_len;
    EVP_PKEY *pkey; /* RS256, ES256: the public key */
};

/* ------------------------------------------------------------------------------------------
 * Verifiers
 * ------------------------------------------------------------------------------------------ */

static void say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

struct dw_jwt_verifier *dw_jwt_verifier_new_hs256(const unsigned char *secret, size_t len,
                                                  char *err, size_t errlen)
{
    struct dw_jwt_verifier *v;

    if (!secret || len < DW_JWT_MIN_SECRET) {
        say(err, errlen, "the HS256 secret is %zu bytes; at least %d are needed", secret ? len : 0,
            DW_JWT_MIN_SECRET);
        return NULL;
    }
    v = dw_xcalloc(1, sizeof(*v));
    v->alg = ALG_HS256;
    v->mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (!v->mac) {
        ERR_clear_error();
        say(err, errlen, "OpenSSL has no HMAC");
        dw_jwt_verifier_free(v);
        return NULL;
    }
    v->secret = dw_xmalloc(len);
    memcpy(v->secret, secret, len);
    v->secret_len = len;
    return v;
}

/* Why pkey cannot serve, as a message naming path in err; or 0 with *alg set. */
static int pick_alg(EVP_PKEY *pkey, const char *path, enum alg *alg, char *err, size_t errlen)
{
    char group[64];
    const char *type;

    switch (EVP_PKEY_get_base_id(pkey)) {
    case EVP_PKEY_RSA:
        if (EVP_PKEY_get_bits(pkey) < DW_JWT_MIN_RSA_BITS) {
            say(err, errlen, "%s: the RSA key has %d bits; RS256 needs at least %d", path,
                EVP_PKEY_get_bits(pkey), DW_JWT_MIN_RSA_BITS);
            return -EINVAL;
        }
        *alg = ALG_RS256;
        return 0;
    case EVP_PKEY_EC:
        if (!EVP_PKEY_get_group_name(pkey, group, sizeof(group), NULL)) {
            say(err, errlen, "%s: the EC key has no named curve; ES256 needs P-256", path);
            return -EINVAL;
        }
        if (OBJ_sn2nid(group) != NID_X9_62_prime256v1) {
            say(err, errlen, "%s: the EC key is on curve %s; ES256 needs P-256 (prime256v1)", path,
                group);
            return -EINVAL;
        }
        *alg = ALG_ES256;
        return 0;
    default:
        type = EVP_PKEY_get0_type_name(pkey);
        say(err, errlen,
            "%s: %s keys are not supported; give an RSA (RS256) or EC P-256 (ES256) public key",
            path, type ? type : "this type of");
        return -EINVAL;
    }
}

struct dw_jwt_verifier *dw_jwt_verifier_new_pem(const char *path, char *err, size_t errlen)
{
    struct dw_jwt_verifier *v = NULL;
    EVP_PKEY *pkey;
    enum alg alg;
    FILE *f;

    if (!path) {
        say(err, errlen, "no public key file given");
        return NULL;
    }
    f = fopen(path, "r");
    if (!f) {
        say(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!pkey) {
        say(err, errlen,
            "%s: no PEM public key (-----BEGIN PUBLIC KEY-----) in the file; from a private "
            "key, make it with: openssl pkey -in KEY -pubout",
            path);
        goto out;
    }
    if (pick_alg(pkey, path, &alg, err, errlen) < 0)
        goto out;
    v = dw_xcalloc(1, sizeof(*v));
    v->alg = alg;
    v->pkey = pkey;
    pkey = NULL;
out:
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return v;
}

void dw_jwt_verifier_free(struct dw_jwt_verifier *v)
{
    if (!v)
        return;
    if (v->secret) {
        OPENSSL_cleanse(v->secret, v->secret_len);
        free(v->secret);
    }
    EVP_MAC_free(v->mac);
    EVP_PKEY_free(v->pkey);
    free(v);
}

const char *dw_jwt_verifier_alg(const struct dw_jwt_verifier *v)
{
    return alg_names[v->alg];
}

/* ------------------------------------------------------------------------------------------
 * Segments: strict base64url
 * ------------------------------------------------------------------------------------------ */

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes len characters of unpadded base64url (RFC 7515 section 2) into out, which has room
 * for len * 3 / 4 bytes, and sets *out_len. Only the 64 characters are accepted, and the bits
 * left over at the end must be zero, so a byte string has exactly one encoding and a token
 * cannot be altered without touching its signed bytes. Returns 0, or -EINVAL. */
static int b64url_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
    unsigned acc = 0, bits = 0;
    size_t n = 0;

    if (len % 4 == 1) /* 6 bits cannot end a byte */
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        int d = b64url_value(in[i]);

        if (d < 0)
            return -EINVAL;
        acc = (acc << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -EINVAL;
    *out_len = n;
    return 0;
}

struct parts {
    const char *seg[3]; /* header, payload, signature */
    size_t len[3];
    size_t signed_len; /* header "." payload, as sent */
};

static const char *split(const char *token, size_t len, struct parts *p)
{
    const char *dot1, *dot2;

    if (len > DW_JWT_MAX_LEN)
        return "token too long";
    dot1 = memchr(token, '.', len);
    if (!dot1)
        return "malformed";
    dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (!dot2)
        return "malformed";
    /* A third dot is not a base64url character: the signature's decoding refuses it. */
    p->seg[0] = token;
    p->len[0] = (size_t)(dot1 - token);
    p->seg[1] = dot1 + 1;
    p->len[1] = (size_t)(dot2 - p->seg[1]);
    p->seg[2] = dot2 + 1;
    p->len[2] = len - (size_t)(p->seg[2] - token);
    p->signed_len = (size_t)(dot2 - token);
    if (p->len[0] == 0 || p->len[1] == 0)
        return "malformed";
    return NULL;
}

/* Parses the n bytes at buf as a JSON object into *obj (a new reference). */
static const char *parse_object(const unsigned char *buf, size_t n, struct json_object **obj,
                                const char *malformed)
{
    if (dw_proto_parse_json((const char *)buf, n, PARSE_DEPTH, obj) < 0)
        return malformed;
    if (!json_object_is_type(*obj, json_type_object))
        return malformed;
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Header and signature
 * ------------------------------------------------------------------------------------------ */

static const char *check_header(const struct dw_jwt_verifier *v, struct json_object *hdr)
{
    struct json_object *val;
    const char *s;

    if (!json_object_object_get_ex(hdr, "alg", &val))
        return "malformed header";
    s = dw_proto_json_string(val);
    if (!s)
        return "malformed header";
    if (strcmp(s, alg_names[v->alg]) != 0)
        return "algorithm mismatch";
    if (json_object_object_get_ex(hdr, "typ", &val)) {
        s = dw_proto_json_string(val);
        if (!s || strcasecmp(s, "JWT") != 0)
            return "unsupported typ";
    }
    /* RFC 7515 section 4.1.11: extensions listed in "crit" must be understood; none is. */
    if (json_object_object_get_ex(hdr, "crit", NULL))
        return "unsupported crit";
    return NULL;
}

static bool hs256_is_valid(const struct dw_jwt_verifier *v, const unsigned char *sig,
                           size_t sig_len, const char *data, size_t len)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = 0;
    EVP_MAC_CTX *ctx;
    bool ok;

    ctx = EVP_MAC_CTX_new(v->mac);
    if (!ctx)
        dw_panic("EVP_MAC_CTX_new failed");
    ok = EVP_MAC_init(ctx, v->secret, v->secret_len, params) == 1 &&
         EVP_MAC_update(ctx, (const unsigned char *)data, len) == 1 &&
         EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) == 1;
    EVP_MAC_CTX_free(ctx);
    /* The length is public; the bytes are compared in constant time. */
    return ok && mac_len == HS256_LEN && sig_len == HS256_LEN &&
           CRYPTO_memcmp(mac, sig, HS256_LEN) == 0;
}

/* JWS carries an ES256 signature as R || S (RFC 7518 section 3.4); OpenSSL verifies the DER
 * ECDSA-Sig-Value. Writes it to der (room for cap bytes) and returns its length, or 0. */
static size_t es256_to_der(const unsigned char *raw, unsigned char *der, size_t cap)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, ES256_LEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(raw + ES256_LEN / 2, ES256_LEN / 2, NULL);
    unsigned char *p = der;
    int n;

    if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s))
        dw_panic("ECDSA_SIG: out of memory");
    n = i2d_ECDSA_SIG(sig, NULL);
    if (n <= 0 || (size_t)n > cap)
        n = 0;
    else
        n = i2d_ECDSA_SIG(sig, &p);
    ECDSA_SIG_free(sig); /* and r, s */
    return n > 0 ? (size_t)n : 0;
}

static bool pkey_is_valid(const struct dw_jwt_verifier *v, const unsigned char *sig, size_t sig_len,
                          const char *data, size_t len)
{
    unsigned char der[ES256_LEN + 16]; /* SEQUENCE of two INTEGERs of up to 33 bytes */
    EVP_MD_CTX *ctx;
    bool ok;

    if (v->alg == ALG_ES256) {
        if (sig_len != ES256_LEN)
            return false;
        sig_len = es256_to_der(sig, der, sizeof(der));
        if (sig_len == 0)
            return false;
        sig = der;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        dw_panic("EVP_MD_CTX_new failed");
    /* RS256 is the key's default padding, PKCS #1 v1.5. */
    ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, v->pkey) == 1 &&
         EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)data, len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

static const char *check_signature(const struct dw_jwt_verifier *v, const struct parts *p,
                                   const unsigned char *sig, size_t sig_len)
{
    bool ok;

    if (v->alg == ALG_HS256)
        ok = hs256_is_valid(v, sig, sig_len, p->seg[0], p->signed_len);
    else
        ok = pkey_is_valid(v, sig, sig_len, p->seg[0], p->signed_len);
    if (!ok) {
        ERR_clear_error();
        return "bad signature";
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Claims
 * ------------------------------------------------------------------------------------------ */

/* Reads the NumericDate claim key, if present, into *t (a fraction rounded up when round_up,
 * else down). Bounding it to 0..DW_JWT_TIME_MAX also refuses NaN, infinities and the integers
 * json-c clamps on overflow, and keeps the leeway arithmetic far from overflow. */
static const char *read_time(struct json_object *payload, const char *key, bool round_up,
                             const char *invalid, int64_t *t, bool *present)
{
    struct json_object *val;
    double d;

    *present = json_object_object_get_ex(payload, key, &val);
    if (!*present)
        return NULL;
    if (json_object_is_type(val, json_type_int)) {
        *t = json_object_get_int64(val);
        return *t >= 0 && *t <= DW_JWT_TIME_MAX ? NULL : invalid;
    }
    if (!json_object_is_type(val, json_type_double))
        return invalid;
    d = json_object_get_double(val);
    if (!(d >= 0 && d <= (double)DW_JWT_TIME_MAX))
        return invalid;
    *t = (int64_t)d; /* truncation: the floor, d being >= 0 */
    if (round_up && (double)*t < d)
        (*t)++;
    return NULL;
}

static const char *read_sub(struct json_object *payload, struct dw_jwt_claims *out)
{
    struct json_object *val;
    const char *sub;

    if (!json_object_object_get_ex(payload, "sub", &val))
        return "missing sub";
    sub = dw_proto_json_string(val);
    if (!sub || !dw_proto_user_id_is_valid(sub))
        return "invalid sub";
    memcpy(out->sub, sub, strlen(sub) + 1); /* at most DW_USER_ID_MAX bytes */
    return NULL;
}

static const char *read_channels(struct json_object *payload, struct dw_jwt_claims *out)
{
    struct json_object *val;
    size_t n;

    if (!json_object_object_get_ex(payload, "channels", &val))
        return NULL;
    if (!json_object_is_type(val, json_type_array))
        return "invalid channels";
    n = json_object_array_length(val);
    if (n > DW_JWT_MAX_CHANNELS)
        return "too many channels";
    for (size_t i = 0; i < n; i++) {
        const char *name = dw_proto_json_string(json_object_array_get_idx(val, i));

        if (!name || !dw_proto_channel_is_valid(name))
            return "invalid channels";
        memcpy(out->channels[i], name, strlen(name) + 1); /* at most DW_CHANNEL_MAX bytes */
    }
    out->n_channels = (unsigned)n;
    return NULL;
}

static const char *read_claims(struct json_object *payload, int64_t now_s, int64_t leeway_s,
                               struct dw_jwt_claims *out)
{
    const char *why;
    bool has_exp;

    why = read_sub(payload, out);
    if (!why)
        why = read_time(payload, "exp", false, "invalid exp", &out->exp, &has_exp);
    if (!why && !has_exp)
        why = "missing exp";
    if (!why)
        why = read_time(payload, "nbf", true, "invalid nbf", &out->nbf, &out->has_nbf);
    if (!why)
        why = read_time(payload, "iat", false, "invalid iat", &out->iat, &out->has_iat);
    if (!why)
        why = read_channels(payload, out);
    if (why)
        return why;
    if (now_s >= out->exp + leeway_s)
        return "expired";
    if (out->has_nbf && now_s + leeway_s < out->nbf)
        return "not yet valid";
    return NULL;
}

/* ------------------------------------------------------------------------------------------
 * Verify
 * ------------------------------------------------------------------------------------------ */

static const char *check_token(const struct dw_jwt_verifier *v, const char *token, size_t len,
                               int64_t now_s, int64_t leeway_s, struct dw_jwt_claims *out)
{
    /* The decoded segments, which take at most 3/4 of the token's bytes: the header first
     * (done with once parsed), then the payload and the signature side by side. */
    unsigned char buf[DW_JWT_MAX_LEN / 4 * 3];
    struct json_object *obj = NULL;
    size_t hdr_len, payload_len, sig_len;
    struct parts p;
    const char *why;

    why = split(token, len, &p);
    if (why)
        return why;
    if (b64url_decode(p.seg[0], p.len[0], buf, &hdr_len) < 0)
        return "malformed";
    why = parse_object(buf, hdr_len, &obj, "malformed header");
    if (!why)
        why = check_header(v, obj);
    json_object_put(obj);
    obj = NULL;
    if (why)
        return why;
    if (b64url_decode(p.seg[1], p.len[1], buf, &payload_len) < 0 ||
        b64url_decode(p.seg[2], p.len[2], buf + payload_len, &sig_len) < 0)
        return "malformed";
    why = check_signature(v, &p, buf + payload_len, sig_len);
    if (!why)
        why = parse_object(buf, payload_len, &obj, "malformed payload");
    if (!why)
        why = read_claims(obj, now_s, leeway_s, out);
    json_object_put(obj);
    return why;
}

int dw_jwt_verify(const struct dw_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  int64_t leeway_s, struct dw_jwt_claims *out, const char **reason)
{
    const char *why;

    if (!v || !token || !out || !reason || now_s < 0 || now_s > DW_JWT_TIME_MAX || leeway_s < 0 ||
        leeway_s > DW_JWT_TIME_MAX) {
        if (reason)
            *reason = "invalid argument";
        return -EINVAL;
    }
    memset(out, 0, sizeof(*out));
    why = check_token(v, token, len, now_s, leeway_s, out);
    *reason = why;
    if (why) {
        memset(out, 0, sizeof(*out));
        return -EPERM;
    }
    return 0;
}
