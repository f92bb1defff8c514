/*
 * auth — DESIGN: the policy is data made once (auth.h); the I/O thread asks it questions at
 * the upgrade and on each operator request. The operator token is compared as SHA-256
 * digests with CRYPTO_memcmp, so neither its bytes nor its length show in the timing.
 */
#define DW_LOG_MODULE "auth"
#include "dealwire/auth.h"
#include "dealwire/config.h"
#include "dealwire/mem.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

struct dw_auth {
    struct dw_jwt_verifier *jwt; /* NULL: dev mode, user_id from the query */
    int64_t leeway;
    bool api_token_set;
    unsigned char api_digest[32]; /* SHA-256 of the operator token */
    char **origins;               /* exact Origin values allowed; NULL: any */
    size_t norigins;
};

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 32;

    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL))
        abort(); /* only on allocation failure inside OpenSSL */
}

struct dw_auth *dw_auth_new(const struct dw_config *cfg, FILE *err)
{
    struct dw_auth *a = dw_xcalloc(1, sizeof(*a));
    char msg[512];

    a->leeway = cfg->jwt_leeway;
    if (cfg->jwt_secret) {
        a->jwt = dw_jwt_verifier_new_hs256((const unsigned char *)cfg->jwt_secret,
                                           strlen(cfg->jwt_secret), msg, sizeof(msg));
        if (!a->jwt) {
            fprintf(err, "dealwire: --jwt-secret: %s\n", msg);
            goto fail;
        }
    } else if (cfg->jwt_public_key) {
        a->jwt = dw_jwt_verifier_new_pem(cfg->jwt_public_key, msg, sizeof(msg));
        if (!a->jwt) {
            fprintf(err, "dealwire: --jwt-public-key: %s\n", msg);
            goto fail;
        }
    }
    if (cfg->api_token) {
        a->api_token_set = true;
        sha256(cfg->api_token, strlen(cfg->api_token), a->api_digest);
    }
    for (size_t i = 0; cfg->origins && cfg->origins[i]; i++) {
        a->origins = dw_xrealloc(a->origins, (a->norigins + 1) * sizeof(*a->origins));
        a->origins[a->norigins++] = dw_xstrdup(cfg->origins[i]);
    }
    return a;

fail:
    dw_auth_free(a);
    return NULL;
}

void dw_auth_free(struct dw_auth *a)
{
    if (!a)
        return;
    dw_jwt_verifier_free(a->jwt);
    for (size_t i = 0; i < a->norigins; i++)
        free(a->origins[i]);
    free(a->origins);
    OPENSSL_cleanse(a->api_digest, sizeof(a->api_digest));
    free(a);
}

bool dw_auth_jwt_required(const struct dw_auth *a)
{
    return a->jwt != NULL;
}

const char *dw_auth_mode(const struct dw_auth *a)
{
    return a->jwt ? dw_jwt_verifier_alg(a->jwt) : "off";
}

int dw_auth_verify(const struct dw_auth *a, const char *token, size_t len, int64_t now_s,
                   struct dw_jwt_claims *claims, const char **reason)
{
    if (!a->jwt) {
        *reason = "authentication is off";
        return -1;
    }
    return dw_jwt_verify(a->jwt, token, len, now_s, a->leeway, claims, reason) == 0 ? 0 : -1;
}

int64_t dw_auth_leeway(const struct dw_auth *a)
{
    return a->leeway;
}

bool dw_auth_origin_allowed(const struct dw_auth *a, const char *origin)
{
    if (!a->origins || !origin)
        return true;
    for (size_t i = 0; i < a->norigins; i++) {
        if (strcmp(a->origins[i], origin) == 0)
            return true;
    }
    return false;
}

bool dw_auth_origins_enforced(const struct dw_auth *a)
{
    return a->origins != NULL;
}

bool dw_auth_bearer(const char *authorization, const char **token, size_t *len)
{
    const char *p;

    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return false;
    p = authorization + 7;
    while (*p == ' ')
        p++;
    *len = strcspn(p, " \t");
    if (*len == 0 || p[*len] != '\0')
        return false;
    *token = p;
    return true;
}

bool dw_auth_protocol_token(const char *protocols, const char **token, size_t *len)
{
    const char *p = protocols;

    while (p && *p) {
        size_t n;

        while (*p == ' ' || *p == ',')
            p++;
        n = strcspn(p, ", ");
        if (n > 7 && strncmp(p, "bearer.", 7) == 0) {
            *token = p + 7;
            *len = n - 7;
            return true;
        }
        p += n;
    }
    return false;
}

bool dw_auth_api_allowed(const struct dw_auth *a, const char *authorization)
{
    unsigned char digest[32];
    const char *token;
    size_t len;

    if (!a->api_token_set)
        return true;
    if (!dw_auth_bearer(authorization, &token, &len))
        return false;
    sha256(token, len, digest);
    return CRYPTO_memcmp(digest, a->api_digest, sizeof(digest)) == 0;
}

bool dw_auth_api_token_set(const struct dw_auth *a)
{
    return a->api_token_set;
}
