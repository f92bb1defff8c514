/*
 * auth — who may connect and who may call the operator APIs: the JWT verifier, the allowed
 * browser origins and the operator token, made once from the configuration.
 *
 * WebSocket clients: with --jwt-secret or --jwt-public-key every upgrade must carry a JWT
 * (jwt.h says what a token must be); its "sub" is the user id and its "channels" the private
 * channels it may join. The token may come, in this order of preference, as
 *   - an "Authorization: Bearer <token>" header (non-browser clients),
 *   - a Sec-WebSocket-Protocol entry "bearer.<token>" next to "dealwire" (short tokens only:
 *     lws 4.1 drops a connection whose Sec-WebSocket-Protocol is over 128 bytes),
 *   - a "token=<token>" query argument (browsers, which cannot set headers).
 * Without a JWT key, the dev-mode "user_id" query argument names the user.
 *
 * Origins: with --allowed-origins, an upgrade whose Origin header is not exactly one of the
 * entries is refused (cross-site WebSocket hijacking). A request without Origin (not a
 * browser) is allowed: browsers always send it on WebSocket upgrades.
 *
 * Operator API: with --api-token, the /api/ endpoints need "Authorization: Bearer <token>".
 * Both tokens are compared in constant time.
 *
 * Synchronization: immutable after dw_auth_new; any thread may use it.
 */
#ifndef DEALWIRE_AUTH_H
#define DEALWIRE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dealwire/jwt.h"

struct dw_config;
struct dw_auth;

/* thread: main. Makes the policy cfg describes (cfg is only read during the call). Returns
 * it, or NULL after one line on err naming the flag and the problem (a key file missing or of
 * the wrong kind): the daemon then exits 2. */
struct dw_auth *dw_auth_new(const struct dw_config *cfg, FILE *err);

/* thread: main. Frees a (NULL is fine). */
void dw_auth_free(struct dw_auth *a);

/* thread: any. Whether WebSocket clients must present a JWT. */
bool dw_auth_jwt_required(const struct dw_auth *a);

/* thread: any. "off", or the JWT algorithm ("HS256", "RS256", "ES256"). */
const char *dw_auth_mode(const struct dw_auth *a);

/* thread: any. Verifies token (len bytes) at now_s (seconds since the epoch) with the
 * configured leeway. Returns 0 with *claims set, or -1 with *reason a static phrase fit for a
 * log line (never the token). Only when dw_auth_jwt_required. */
int dw_auth_verify(const struct dw_auth *a, const char *token, size_t len, int64_t now_s,
                   struct dw_jwt_claims *claims, const char **reason);

/* thread: any. The configured leeway, seconds: a connection is closed at its token's
 * exp + leeway. */
int64_t dw_auth_leeway(const struct dw_auth *a);

/* thread: any. Whether a WebSocket upgrade with this Origin header (NULL: none) may go on. */
bool dw_auth_origin_allowed(const struct dw_auth *a, const char *origin);

/* thread: any. Whether origins are checked at all. */
bool dw_auth_origins_enforced(const struct dw_auth *a);

/* thread: any. Whether an operator API request with this Authorization header (NULL: none)
 * may go on: always without --api-token, else only with "Bearer <the token>". */
bool dw_auth_api_allowed(const struct dw_auth *a, const char *authorization);

/* thread: any. Whether --api-token is set. */
bool dw_auth_api_token_set(const struct dw_auth *a);

/* thread: any. The token in an "Authorization: Bearer <token>" value (scheme in any case,
 * one or more spaces): sets *token and *len and returns true, else false. */
bool dw_auth_bearer(const char *authorization, const char **token, size_t *len);

/* thread: any. The token in a Sec-WebSocket-Protocol value: the first comma-separated entry
 * "bearer.<token>". Sets *token and *len and returns true, else false. */
bool dw_auth_protocol_token(const char *protocols, const char **token, size_t *len);

#endif
