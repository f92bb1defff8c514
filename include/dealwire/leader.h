/*
 * leader — which daemon runs the monitors when several share one database (docs/operations.md,
 * "Several nodes").
 *
 * Exactly one node leads: the one that holds a PostgreSQL advisory lock on a session of its own.
 * A thread of this module tries to take the lock every second while it does not hold it, and
 * checks every second that its session still holds it. When the leader dies (kill -9) its
 * session ends and PostgreSQL releases the lock at once: another node takes it within a second.
 * When the leader loses the database it stops leading at once (it cannot know whether its
 * session, and the lock, still live); it leads again only once it holds the lock again.
 *
 * The same thread records the node in dealwire_nodes every second, and warns (at start-up, then
 * once a minute while it lasts) when another node was heard from in the last 10 s: without a
 * shared bus the clients of one node do not get the live messages another node sends.
 */
#ifndef DEALWIRE_LEADER_H
#define DEALWIRE_LEADER_H

#include <stdbool.h>

struct dw_db;
struct dw_leader;

/* How often the leader thread tries, checks and records, in seconds. */
#define DW_LEADER_TICK_S 1
/* A node not heard from for this long is no longer counted as sharing the database. */
#define DW_LEADER_NODE_TTL_S 10

/* thread: any. This daemon's name among the nodes: "<host name>:<port>". */
void dw_leader_node_name(int port, char out[128]);

/* thread: main, after dw_db_start(). Starts the thread for node ("host:port", copied) on db
 * (borrowed until dw_leader_stop); bus says whether this node shares its messages over Redis
 * (then only peers without a bus are warned about). Returns NULL (with a log line) when it
 * cannot start. */
struct dw_leader *dw_leader_start(struct dw_db *db, const char *node, bool bus);

/* thread: any. Does this node lead the monitors now? (false for a NULL l) */
bool dw_leader_is_leader(const struct dw_leader *l);

/* thread: any. Other nodes heard from in the last DW_LEADER_NODE_TTL_S seconds, as of the last
 * tick (0 for a NULL l). */
unsigned dw_leader_peers(const struct dw_leader *l);

/* thread: main. Stops the thread (its session ends: the lock is released), removes the node's
 * row when the database is reachable, and frees l. NULL is a no-op. */
void dw_leader_stop(struct dw_leader *l);

#endif
