/*
 * tls — dealwire's TLS settings, on the OpenSSL context libwebsockets makes for the listening
 * port when --tls-cert/--tls-key are set (then the port serves wss and https only).
 *
 *   - protocol: TLS 1.2 at least (TLS 1.0 and 1.1 handshakes fail);
 *   - TLS 1.2 ciphers: ECDHE with AES-GCM or ChaCha20-Poly1305 only (forward secrecy, AEAD);
 *     TLS 1.3: OpenSSL's default suites;
 *   - no compression (CRIME), no renegotiation, the server's cipher order;
 *   - ALPN http/1.1 only (set where the context is made, server.c).
 *
 * Reload: SIGHUP loads the files again into the same context, after checking them in a
 * scratch one, so a bad file leaves the old certificate serving. Open connections keep the
 * certificate they were made with; new handshakes get the new one.
 *
 * Synchronization: dw_tls_check_files on any thread; the others on the I/O thread, which
 * owns the context.
 */
#ifndef DEALWIRE_TLS_H
#define DEALWIRE_TLS_H

#include <stddef.h>
#include <stdio.h>

#include <openssl/ssl.h>

/* The TLS 1.2 cipher list (OpenSSL names). */
#define DW_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* thread: any. Checks that cert (a PEM certificate, then its chain) and key (a PEM private
 * key) can be read and belong together. Returns 0, or -1 with one line in err (errlen bytes)
 * saying which file and what is wrong. */
int dw_tls_check_files(const char *cert, const char *key, char *err, size_t errlen);

/* thread: any. Writes a summary of the certificate in cert (subject, expiry, days left) into
 * buf (len bytes); returns the days left, negative when expired. */
long dw_tls_describe(const char *cert, char *buf, size_t len);

/* thread: io. Applies the settings above to ctx. Returns 0, or -1 if OpenSSL refuses one. */
int dw_tls_harden(SSL_CTX *ctx);

/* thread: io. Loads cert and key into ctx, replacing what it serves, once they pass
 * dw_tls_check_files and use the same key type as before (an RSA certificate cannot replace an
 * ECDSA one in place: restart for that). Returns 0, or -1 with a line in err; then ctx is
 * unchanged. */
int dw_tls_reload(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen);

#endif
