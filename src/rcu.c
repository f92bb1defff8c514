/*
 * rcu — DESIGN: the one address TSan uses to model RCU grace periods (see rcu.h).
 */
#include "dealwire/rcu.h"

char dw__rcu_tsan_sync;
