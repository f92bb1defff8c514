/*
 * http — the bench's publishers: keep-alive HTTP/1.1 connections to POST /api/publish (nchan:
 * POST /pub/<channel>), each with at most one request in flight, so that each is one ordered
 * producer. Answers are read by Content-Length and handed to the scenario with their status,
 * "recipients" and body (the replay scenario's set-up reads each item's "seq" in it).
 */
#ifndef DWB_HTTP_H
#define DWB_HTTP_H

#include "bench.h"

/* Allocates pub's buffers for request bodies of up to body_cap bytes. Returns 0 or -ENOMEM. */
int dwb_pub_init(struct dwb_pub *pub, uint32_t index, size_t body_cap, unsigned batch);

/* Frees pub's buffers and closes its socket. */
void dwb_pub_destroy(struct dwb_pub *pub);

/* Starts a non-blocking connect to the daemon; pub is IDLE once it completes. Returns 0 or a
 * negative errno. */
int dwb_pub_open(struct dwb_run *run, struct dwb_pub *pub);

/* Where the caller writes the next request body (up to the capacity given to init). */
char *dwb_pub_body(struct dwb_pub *pub);

/* Sends a POST to path (/api/publish, or nchan's /pub/<channel>) carrying the body_len bytes
 * at dwb_pub_body(pub); pub must be IDLE and becomes BUSY until its answer arrives
 * (dwb_on_answer). Returns 0 or a negative errno. */
int dwb_pub_send(struct dwb_run *run, struct dwb_pub *pub, const char *path, size_t body_len);

/* Handles pub's epoll events: connect completion, the rest of a request, the answer. */
void dwb_pub_on_event(struct dwb_run *run, struct dwb_pub *pub, uint32_t events);

/* Closes pub's socket; it becomes CLOSED (and may be opened again). */
void dwb_pub_close(struct dwb_pub *pub);

/* Value of header name in a NUL-terminated HTTP head, case-insensitive, with its length in
 * *vlen; NULL when absent. Returns a borrowed pointer into head. */
const char *dwb_http_find_header(const char *head, const char *name, size_t *vlen);

#endif
