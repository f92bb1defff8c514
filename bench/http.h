/*
 * http — the bench's publishers: one connection per producer to POST /api/publish (nchan:
 * POST /pub/<channel>) or to a publish WebSocket (dealwire's /ws/publish, nchan's /pub/all),
 * in the shape --publish-mode says: one HTTP request in flight (http), up to --in-flight
 * pipelined HTTP requests (pipeline), or up to --in-flight frames outstanding (ws). Answers
 * come back in order, so each connection is one ordered producer; each answer is handed to
 * the scenario with the request it answers, its status, "recipients" and body (the replay
 * scenario's set-up reads each item's "seq" in it).
 */
#ifndef DWB_HTTP_H
#define DWB_HTTP_H

#include "bench.h"

/* Allocates pub's buffers for request bodies of up to body_cap bytes of up to batch messages,
 * and its ring of depth outstanding requests. Returns 0 or -ENOMEM (pub_destroy frees what was
 * allocated). */
int dwb_pub_init(struct dwb_pub *pub, uint32_t index, size_t body_cap, unsigned batch,
                 unsigned depth);

/* Frees pub's buffers and closes its socket. */
void dwb_pub_destroy(struct dwb_pub *pub);

/* Starts a non-blocking connect to the server; pub is READY once it completes (ws: once the
 * upgrade is answered). Returns 0 or a negative errno. */
int dwb_pub_open(struct dwb_run *run, struct dwb_pub *pub);

/* Where the caller writes the next request body (up to the capacity given to init). */
char *dwb_pub_body(struct dwb_pub *pub);

/* The slot the next request fills (its messages, targets, expected counts), or NULL when pub
 * is not READY or has --in-flight requests outstanding. Returns a borrowed pointer valid until
 * the request is answered; the slot is the pub's until dwb_pub_send commits it. */
struct dwb_req *dwb_pub_next(struct dwb_pub *pub);

/* Queues the request in dwb_pub_next(pub) carrying the body_len bytes at dwb_pub_body(pub):
 * a POST to path (/api/publish, or nchan's /pub/<channel>), or a frame on the publish socket
 * (ws: path is not used). It is outstanding until its answer arrives (dwb_on_answer). Nothing
 * is written before dwb_pub_flush. Returns 0, or a negative errno and nothing is queued. */
int dwb_pub_send(struct dwb_run *run, struct dwb_pub *pub, const char *path, size_t body_len);

/* Writes what pub has queued, as far as the socket takes it (the rest on EPOLLOUT). A failed
 * write loses the connection: its outstanding requests are answered with status 0. */
void dwb_pub_flush(struct dwb_run *run, struct dwb_pub *pub);

/* Handles pub's epoll events: connect completion, the upgrade (ws), the rest of what is
 * queued, the answers. */
void dwb_pub_on_event(struct dwb_run *run, struct dwb_pub *pub, uint32_t events);

/* Closes pub's socket and forgets its outstanding requests unanswered; it becomes CLOSED (and
 * may be opened again). */
void dwb_pub_close(struct dwb_pub *pub);

/* Whether pub is connecting, or upgrading (ws). */
static inline bool dwb_pub_is_opening(const struct dwb_pub *pub)
{
    return pub->state == DWB_PUB_CONNECTING || pub->state == DWB_PUB_UPGRADING;
}

/* Value of header name in a NUL-terminated HTTP head, case-insensitive, with its length in
 * *vlen; NULL when absent. Returns a borrowed pointer into head. */
const char *dwb_http_find_header(const char *head, const char *name, size_t *vlen);

#endif
