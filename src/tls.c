/*
 * tls — DESIGN: OpenSSL calls only; libwebsockets makes the context and hands it over in
 * LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS (server.c), where dw_tls_harden runs.
 * Errors are read from OpenSSL's queue and the queue is left empty, so that a stale entry
 * cannot fail an unrelated TLS connection on the same thread later.
 */
#define DW_LOG_MODULE "tls"
#include "dealwire/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

/* Appends OpenSSL's first queued error (or nothing) to buf, and clears the queue. */
static void put_ssl_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    size_t n = strlen(buf);

    if (e && n + 3 < len) {
        snprintf(buf + n, len - n, ": ");
        ERR_error_string_n(e, buf + n + 2, len - n - 2);
    }
    ERR_clear_error();
}

/* Can path be opened for reading? Else a message in err. */
static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");

    if (!f) {
        snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

/* Loads cert and key into ctx and checks that they match. */
static int load_pair(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "no PEM certificate in %s", cert);
        put_ssl_error(err, errlen);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "no PEM private key in %s, or not the key of %s", key, cert);
        put_ssl_error(err, errlen);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "the key in %s does not match the certificate in %s", key, cert);
        put_ssl_error(err, errlen);
        return -1;
    }
    return 0;
}

/* Loads cert and key into a scratch context: readable, PEM, matching. Sets *key_type (an
 * EVP_PKEY base id) when not NULL. */
static int check_pair(const char *cert, const char *key, int *key_type, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    int r;

    if (readable("certificate", cert, err, errlen) < 0 || readable("key", key, err, errlen) < 0)
        return -1;
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context");
        put_ssl_error(err, errlen);
        return -1;
    }
    r = load_pair(ctx, cert, key, err, errlen);
    if (r == 0 && key_type)
        *key_type = EVP_PKEY_get_base_id(SSL_CTX_get0_privatekey(ctx));
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return r;
}

int dw_tls_check_files(const char *cert, const char *key, char *err, size_t errlen)
{
    return check_pair(cert, key, NULL, err, errlen);
}

long dw_tls_describe(const char *cert, char *buf, size_t len)
{
    FILE *f = fopen(cert, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    char subject[256] = "?";
    int days = 0, secs = 0;

    if (f)
        fclose(f);
    if (!x) {
        snprintf(buf, len, "%s: unreadable", cert);
        ERR_clear_error();
        return 0;
    }
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x));
    snprintf(buf, len, "%s (%s), %d days left", cert, subject, days);
    X509_free(x);
    ERR_clear_error();
    return days < 0 || (days == 0 && secs < 0) ? -1 : days;
}

int dw_tls_harden(SSL_CTX *ctx)
{
    int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
             SSL_CTX_set_cipher_list(ctx, DW_TLS12_CIPHERS) == 1;

    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    ERR_clear_error();
    return ok ? 0 : -1;
}

int dw_tls_reload(SSL_CTX *ctx, const char *cert, const char *key, char *err, size_t errlen)
{
    EVP_PKEY *old = SSL_CTX_get0_privatekey(ctx);
    int type, r;

    if (check_pair(cert, key, &type, err, errlen) < 0)
        return -1;
    if (old && EVP_PKEY_get_base_id(old) != type) {
        snprintf(err, errlen,
                 "the key in %s is of another type than the one serving (RSA vs EC): "
                 "restart dealwire to change it",
                 key);
        return -1;
    }
    /* Checked: loading into the serving context now fails only on memory exhaustion. */
    r = load_pair(ctx, cert, key, err, errlen);
    ERR_clear_error();
    return r;
}
