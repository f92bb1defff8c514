/*
 * jwt — verifying the JSON Web Tokens (RFC 7519, compact JWS, RFC 7515) that clients present
 * on the WebSocket upgrade, with OpenSSL directly.
 *
 * A verifier is made once at start-up for one algorithm: HS256 from a shared secret
 * (--jwt-secret), or RS256 / ES256 from a PEM public key file (--jwt-public-key), the
 * algorithm following the key type. The algorithm is configuration, never taken from the
 * token: a token whose header names any other "alg" ("none", or HS256 shown to an RS256
 * verifier, the classic key confusion) is refused before its signature is looked at.
 *
 * What a token must be to pass dw_jwt_verify:
 *   - at most DW_JWT_MAX_LEN bytes: three base64url segments (RFC 7515: no padding, no
 *     whitespace, canonical trailing bits) joined by two dots;
 *   - header: a JSON object with "alg" equal to the verifier's algorithm (case-sensitive),
 *     "typ", when present, "JWT" (any case), and no "crit" (no extension is understood);
 *   - a valid signature over the first two segments as sent;
 *   - payload: a JSON object with
 *       "sub"       required, a user id (dw_proto_user_id_is_valid): the connection's user;
 *       "exp"       required (a token that never expires is a permanent credential, and
 *                   dealwire has no revocation), refused when now >= exp + leeway;
 *       "nbf"       optional, refused when now + leeway < nbf;
 *       "iat"       optional, type-checked only;
 *       "channels"  optional, an array of at most DW_JWT_MAX_CHANNELS valid channel names
 *                   (dw_proto_channel_is_valid): the private channels this token may join.
 *     Times are NumericDates: JSON numbers from 0 to DW_JWT_TIME_MAX seconds since the epoch;
 *     a fraction is rounded toward refusal (exp down, nbf up). Other claims ("iss", "aud",
 *     "jti", ...) are ignored.
 *
 * Synchronization: a verifier is immutable once made, so any number of threads may call
 * dw_jwt_verify on it at once (each call uses its own OpenSSL contexts). Make and free it
 * where nobody else can reach it.
 */
#ifndef DEALWIRE_JWT_H
#define DEALWIRE_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dealwire/proto.h" /* DW_USER_ID_MAX, DW_CHANNEL_MAX */

/* Longest token accepted, in bytes. */
#define DW_JWT_MAX_LEN 8192
/* Most entries accepted in the "channels" claim; a token with more is refused. */
#define DW_JWT_MAX_CHANNELS 64
/* Shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2: at least the hash size). */
#define DW_JWT_MIN_SECRET 32
/* Smallest RSA key accepted, in bits. */
#define DW_JWT_MIN_RSA_BITS 2048
/* Latest NumericDate accepted: 9999-12-31T23:59:59Z. Also the bound on now and leeway. */
#define DW_JWT_TIME_MAX INT64_C(253402300799)

struct dw_jwt_verifier;

/* The claims of a verified token, in fixed storage owned by the struct (nothing to release;
 * about 4 KiB, so fine on a stack). */
struct dw_jwt_claims {
    char sub[DW_USER_ID_MAX + 1]; /* the user id */
    int64_t exp;                  /* seconds since the epoch */
    int64_t nbf;                  /* when has_nbf */
    int64_t iat;                  /* when has_iat */
    bool has_nbf, has_iat;
    unsigned n_channels; /* entries used in channels[], in token order */
    char channels[DW_JWT_MAX_CHANNELS][DW_CHANNEL_MAX + 1];
};

/* thread: any. Makes an HS256 verifier; borrows secret for the duration of the call (it keeps
 * a copy, wiped on free). Returns a new verifier, or NULL with a message in err (errlen bytes,
 * NUL-terminated) when the secret is shorter than DW_JWT_MIN_SECRET bytes. */
struct dw_jwt_verifier *dw_jwt_verifier_new_hs256(const unsigned char *secret, size_t len,
                                                  char *err, size_t errlen);

/* thread: any. Makes an RS256 verifier from a PEM "PUBLIC KEY" file holding an RSA key of at
 * least DW_JWT_MIN_RSA_BITS bits, or an ES256 verifier when it holds an EC P-256 key. Returns a
 * new verifier, or NULL with a message naming path and the problem in err (errlen bytes,
 * NUL-terminated): file missing, no public key in it, or another key type or curve. */
struct dw_jwt_verifier *dw_jwt_verifier_new_pem(const char *path, char *err, size_t errlen);

/* thread: any, once nobody else uses v. Frees v and wipes its secret; NULL is a no-op. */
void dw_jwt_verifier_free(struct dw_jwt_verifier *v);

/* thread: any. "HS256", "RS256" or "ES256": the one algorithm v accepts. Static string. */
const char *dw_jwt_verifier_alg(const struct dw_jwt_verifier *v);

/* thread: any. Verifies token (len bytes, need not be NUL-terminated) against v at time now_s
 * (seconds since the epoch) with leeway_s seconds of clock skew allowed on exp and nbf, both
 * 0..DW_JWT_TIME_MAX. Returns 0, fills *out and sets *reason to NULL; or -EPERM (that is -1)
 * when the token is refused, with *reason a static string fit for a log line ("expired",
 * "bad signature", "algorithm mismatch", ...) and *out cleared; or -EINVAL on bad arguments
 * (*reason says so when reason is not NULL). Never logs: the caller logs the reason,
 * rate-limited, and never the token itself. */
int dw_jwt_verify(const struct dw_jwt_verifier *v, const char *token, size_t len, int64_t now_s,
                  int64_t leeway_s, struct dw_jwt_claims *out, const char **reason);

#endif
